//! Kernel modules for the initramfs: which `.ko` files a set of modules needs, and the order
//! in which busybox's `insmod` (which resolves nothing itself) must load them.
//!
//! The dependency graph comes from the kernel's `modules.dep` when the tree has one (one line
//! per module: `kernel/path/a.ko: kernel/path/b.ko kernel/path/c.ko`). Debian's kernel
//! packages ship without it (the package's post-install runs `depmod`), so the same graph is
//! also read from each module's own `.modinfo` ELF section: its `depends=b,c` entry is what
//! `modpost` wrote from the symbols the module uses, and it is what `depmod` checks against.
//! `modules.order` then maps a module name to its path.
//!
//! Module names follow the kernel's rule: the file name without `.ko` (and a compression
//! suffix), with `-` read as `_`.

use std::collections::BTreeMap;

use crate::error::Error;

/// The modules a guest needs to mount its root from a virtio-mmio block device (Debian's
/// cloud kernel builds them as modules; ext4 is built in).
pub const ROOT_DISK_MODULES: &[&str] = &["virtio", "virtio_ring", "virtio_mmio", "virtio_blk"];

fn bad(module: &str, reason: impl Into<String>) -> Error {
    Error::KernelModule {
        module: module.to_string(),
        reason: reason.into(),
    }
}

/// The module name of a path such as `kernel/drivers/block/virtio_blk.ko.xz`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    stem.replace('-', "_")
}

/// One module's path (relative to `lib/modules/<release>/`) and the names of the modules it
/// needs loaded first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleDeps {
    /// The `.ko` file, relative to the module directory.
    pub path: String,
    /// The names of its direct dependencies.
    pub deps: Vec<String>,
}

/// Parses `modules.dep` into a map from module name to [`ModuleDeps`]. Blank lines and
/// `#` comments are skipped; a line without `:` is an error.
pub fn parse_modules_dep(text: &str) -> Result<BTreeMap<String, ModuleDeps>, Error> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((path, deps)) = line.split_once(':') else {
            return Err(bad(
                "modules.dep",
                format!(
                    "line {} has no ':' ({line:?}): regenerate it with depmod",
                    i + 1
                ),
            ));
        };
        let path = path.trim();
        if path.is_empty() {
            return Err(bad(
                "modules.dep",
                format!("line {} names no module", i + 1),
            ));
        }
        map.insert(
            module_name(path),
            ModuleDeps {
                path: path.to_string(),
                deps: deps.split_whitespace().map(module_name).collect(),
            },
        );
    }
    Ok(map)
}

/// Maps module names to paths from `modules.order` (one path a line).
pub fn paths_by_name(modules_order: &str) -> BTreeMap<String, String> {
    modules_order
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|p| (module_name(p), p.to_string()))
        .collect()
}

/// The contents of the `.modinfo` section of a (decompressed) 64-bit little-endian ELF
/// module: its NUL-separated `key=value` strings.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>, Error> {
    let err = |r: &str| {
        bad(
            "modinfo",
            format!("{r}: not an x86_64 kernel module (.ko)?"),
        )
    };
    let get = |off: usize, len: usize| {
        off.checked_add(len)
            .and_then(|end| elf.get(off..end))
            .ok_or_else(|| err("truncated ELF file"))
    };
    let u16_at = |off: usize| get(off, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |off: usize| {
        get(off, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    let u64_at = |off: usize| {
        get(off, 8).and_then(|b| {
            usize::try_from(u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .map_err(|_| err("offset out of range"))
        })
    };
    if get(0, 6)? != b"\x7fELF\x02\x01" {
        return Err(err("no 64-bit little-endian ELF header"));
    }
    let shoff = u64_at(0x28)?;
    let shentsize = u16_at(0x3a)?;
    let shnum = u16_at(0x3c)?;
    let shstrndx = u16_at(0x3e)?;
    if shentsize < 0x40 || shstrndx >= shnum {
        return Err(err("bad section header table"));
    }
    let section = |i: usize| -> Result<(usize, usize, usize), Error> {
        let h = i
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or_else(|| err("bad section header offset"))?;
        Ok((u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = get(stroff, strsize)?;
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let name = strtab
            .get(name..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .ok_or_else(|| err("section name outside the string table"))?;
        if name == b".modinfo" {
            return Ok(get(off, size)?
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }
    Err(err("no .modinfo section"))
}

/// The names in a module's `depends=` modinfo entry (empty when it depends on nothing).
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>, Error> {
    Ok(modinfo(elf)?
        .iter()
        .filter_map(|kv| kv.strip_prefix("depends="))
        .flat_map(|v| v.split(','))
        .filter(|d| !d.is_empty())
        .map(module_name)
        .collect())
}

/// The modules `wanted` needs, dependencies before dependents: a depth-first walk that asks
/// `deps_of(name)` for each module's direct dependencies once, following them in the order
/// given (so the result is deterministic). A dependency cycle or a module `deps_of` cannot
/// find is an error.
pub fn load_order<F>(wanted: &[&str], mut deps_of: F) -> Result<Vec<String>, Error>
where
    F: FnMut(&str) -> Result<Vec<String>, Error>,
{
    #[derive(PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
    let mut order = Vec::new();
    // An explicit stack (module, its deps, next dep to visit): no recursion on input data.
    let mut stack: Vec<(String, Vec<String>, usize)> = Vec::new();
    for w in wanted {
        let w = module_name(w);
        if marks.contains_key(&w) {
            continue;
        }
        marks.insert(w.clone(), Mark::Visiting);
        let deps = deps_of(&w)?;
        stack.push((w, deps, 0));
        while let Some((name, deps, next)) = stack.last_mut() {
            if let Some(dep) = deps.get(*next).cloned() {
                *next += 1;
                match marks.get(&dep) {
                    Some(Mark::Done) => {}
                    Some(Mark::Visiting) => {
                        return Err(bad(
                            &dep,
                            format!("dependency cycle through {name}: the module tree is corrupt"),
                        ))
                    }
                    None => {
                        marks.insert(dep.clone(), Mark::Visiting);
                        let d = deps_of(&dep)?;
                        stack.push((dep, d, 0));
                    }
                }
            } else {
                let (name, _, _) = stack.pop().expect("non-empty");
                marks.insert(name.clone(), Mark::Done);
                order.push(name);
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `depmod` writes for the four virtio modules of Debian's 6.1 cloud kernel, plus
    /// an unrelated line and a module with a dash in its file name.
    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko

kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko
";

    fn from_map(
        map: &BTreeMap<String, ModuleDeps>,
    ) -> impl FnMut(&str) -> Result<Vec<String>, Error> + '_ {
        |n| {
            map.get(n)
                .map(|m| m.deps.clone())
                .ok_or_else(|| bad(n, "not in modules.dep"))
        }
    }

    /// Every module comes after all of its dependencies, and each appears once.
    fn assert_topological(order: &[String], map: &BTreeMap<String, ModuleDeps>) {
        for (i, m) in order.iter().enumerate() {
            assert_eq!(order.iter().filter(|x| *x == m).count(), 1, "{m} twice");
            for d in &map[m].deps {
                let j = order.iter().position(|x| x == d);
                assert!(j.is_some_and(|j| j < i), "{m} before its dependency {d}");
            }
        }
    }

    #[test]
    fn modules_dep_parses_names_paths_and_deps() {
        let map = parse_modules_dep(DEP).unwrap();
        assert_eq!(map.len(), 5);
        assert_eq!(map["virtio_blk"].path, "kernel/drivers/block/virtio_blk.ko");
        assert_eq!(map["virtio_blk"].deps, ["virtio", "virtio_ring"]);
        assert_eq!(map["virtio_rng"].deps, ["virtio"]);
        assert!(map["virtio"].deps.is_empty());
        assert!(parse_modules_dep("kernel/a.ko kernel/b.ko\n").is_err());
        assert!(parse_modules_dep(": kernel/b.ko\n").is_err());
    }

    #[test]
    fn load_order_puts_dependencies_first_whatever_is_asked_first() {
        let map = parse_modules_dep(DEP).unwrap();
        // Asked dependents first: the order still loads virtio and virtio_ring first.
        let order = load_order(&["virtio_blk", "virtio_mmio"], from_map(&map)).unwrap();
        assert_eq!(
            order,
            ["virtio", "virtio_ring", "virtio_blk", "virtio_mmio"]
        );
        assert_topological(&order, &map);
        let order = load_order(ROOT_DISK_MODULES, from_map(&map)).unwrap();
        assert_eq!(order.len(), 4);
        assert_topological(&order, &map);
        // A dash in the asked name is the same module.
        let order = load_order(&["virtio-rng"], from_map(&map)).unwrap();
        assert_eq!(order, ["virtio", "virtio_rng"]);
    }

    #[test]
    fn a_missing_module_and_a_cycle_are_errors_not_hangs() {
        let map = parse_modules_dep(DEP).unwrap();
        let e = load_order(&["nope"], from_map(&map)).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let cyc = parse_modules_dep("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n").unwrap();
        let e = load_order(&["a"], from_map(&cyc)).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        // A self-loop too.
        let me = parse_modules_dep("a.ko: a.ko\n").unwrap();
        assert!(load_order(&["a"], from_map(&me)).is_err());
    }

    #[test]
    fn module_names_strip_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/x/virtio_blk.ko"), "virtio_blk");
        assert_eq!(module_name("kernel/x/virtio-rng.ko.xz"), "virtio_rng");
        assert_eq!(module_name("a.ko.zst"), "a");
        let m = paths_by_name("kernel/a/x-y.ko\n\nkernel/b/z.ko.zst\n");
        assert_eq!(m["x_y"], "kernel/a/x-y.ko");
        assert_eq!(m["z"], "kernel/b/z.ko.zst");
    }

    /// A minimal ELF64 file: a null section, `.modinfo` and `.shstrtab`.
    fn elf(modinfo: &[u8]) -> Vec<u8> {
        let shstr = b"\0.modinfo\0.shstrtab\0";
        let mut f = vec![0u8; 0x40];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = f.len();
        f.extend_from_slice(modinfo);
        let shstr_off = f.len();
        f.extend_from_slice(shstr);
        let shoff = f.len().next_multiple_of(8);
        f.resize(shoff, 0);
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 0x40];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, modinfo_off, modinfo.len());
        sh(10, shstr_off, shstr.len());
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    #[test]
    fn modinfo_depends_reads_the_elf_section() {
        let f = elf(b"license=GPL\0depends=virtio,virtio_ring\0vermagic=6.1.0 SMP\0");
        assert_eq!(modinfo_depends(&f).unwrap(), ["virtio", "virtio_ring"]);
        assert!(modinfo_depends(&elf(b"depends=\0name=virtio\0"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn modinfo_refuses_garbage_without_panicking() {
        let good = elf(b"depends=a\0");
        assert!(modinfo(b"").is_err());
        assert!(modinfo(b"MZ\0\0\0\0\0\0").is_err());
        // Every truncation and every single-byte corruption of the header table: an error
        // or a result, never a panic.
        for n in 0..good.len() {
            let _ = modinfo(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0x7f, 0xff] {
                let mut f = good.clone();
                f[i] = v;
                let _ = modinfo(&f);
            }
        }
        let mut huge = good.clone();
        huge[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(modinfo(&huge).is_err());
        // No .modinfo section: renamed.
        let mut f = good;
        let at = f.windows(8).position(|w| w == b".modinfo").unwrap();
        f[at + 1] = b'X';
        assert!(modinfo(&f).unwrap_err().to_string().contains("no .modinfo"));
    }
}
