//! `mkinitramfs BUSYBOX OUTPUT`: writes the Linux guest's initramfs (a gzip newc cpio with
//! busybox, its applet links, `/dev/console` and an `/init` that prints
//! `RVMM-LINUX-BOOTED`), reproducibly: the same busybox gives the same bytes.
//!
//! The applet list comes from running `BUSYBOX --list-full` (Debian's busybox-static is a
//! static x86_64 binary, so it runs on any x86_64 Linux host); when it cannot run, only the
//! applets `/init` needs are linked and a warning says so.
//!
//! `--modules DIR` (a kernel's `lib/modules/<release>`) adds the modules a root disk needs
//! (`--module NAME`, repeatable; by default virtio, virtio_ring, virtio_mmio, virtio_blk) and
//! everything they depend on, in load order. The graph comes from `DIR/modules.dep` when it
//! exists, else from `modules.order` and each module's `.modinfo` (Debian's packages ship no
//! `modules.dep`). Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are decompressed here,
//! with `xz`/`zstd` for the first two, because busybox's `insmod` cannot.

use anyhow::{bail, Context};
use clap::Parser;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use vmm::images::{initramfs, kmod};

/// Write the Linux guest's initramfs (gzip newc cpio) from a static busybox binary.
#[derive(Parser, Debug)]
#[command(name = "mkinitramfs", version)]
struct Cli {
    /// The static busybox binary (e.g. from Debian's busybox-static: bin/busybox).
    busybox: PathBuf,
    /// Where to write the initramfs (.cpio.gz).
    output: PathBuf,
    /// Link only the applets /init needs instead of asking busybox for its full list.
    #[arg(long)]
    minimal: bool,
    /// A kernel's module directory (lib/modules/<release>): adds the root-disk modules.
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// A module to add with its dependencies (repeatable; default: the virtio block set).
    #[arg(long = "module", value_name = "NAME", requires = "modules")]
    module: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("mkinitramfs: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let busybox = std::fs::read(&cli.busybox)
        .with_context(|| format!("reading busybox {}", cli.busybox.display()))?;
    if busybox.get(..4) != Some(b"\x7fELF") {
        bail!("{} is not an ELF binary", cli.busybox.display());
    }
    let list = if cli.minimal {
        String::new()
    } else {
        match Command::new(&cli.busybox).arg("--list-full").output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => {
                eprintln!(
                    "mkinitramfs: warning: `{} --list-full` failed ({}); linking only the \
                     applets /init needs",
                    cli.busybox.display(),
                    o.status
                );
                String::new()
            }
            Err(e) => {
                eprintln!(
                    "mkinitramfs: warning: cannot run {} ({e}); linking only the applets \
                     /init needs",
                    cli.busybox.display()
                );
                String::new()
            }
        }
    };
    let applets = initramfs::applet_paths(&list);
    let mut archive = initramfs::linux_guest(busybox, &applets).context("building the archive")?;
    let mut module_names = Vec::new();
    if let Some(dir) = &cli.modules {
        let wanted: Vec<&str> = if cli.module.is_empty() {
            kmod::ROOT_DISK_MODULES.to_vec()
        } else {
            cli.module.iter().map(String::as_str).collect()
        };
        let modules = read_modules(dir, &wanted)?;
        module_names = modules.iter().map(|(n, _)| n.clone()).collect();
        initramfs::add_modules(&mut archive, &modules).context("adding the modules")?;
    }
    let bytes = archive.to_cpio_gz();

    // Write next to the destination, then rename: a reader never sees half a file.
    let tmp = cli.output.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &cli.output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), cli.output.display()))?;
    println!(
        "{}: {} bytes, {} entries, {} applet links, modules in load order: [{}]",
        cli.output.display(),
        bytes.len(),
        archive.len(),
        applets.len(),
        module_names.join(" ")
    );
    Ok(())
}

/// The modules `wanted` needs from `dir`, in load order, as (name, uncompressed bytes).
/// Built-in modules (named in `modules.builtin`) are left out: there is nothing to load.
fn read_modules(dir: &Path, wanted: &[&str]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let read_text = |name: &str| std::fs::read_to_string(dir.join(name));
    let builtin: Vec<String> = read_text("modules.builtin")
        .map(|t| t.lines().map(kmod::module_name).collect())
        .unwrap_or_default();
    let wanted: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| {
            let b = builtin.contains(&kmod::module_name(w));
            if b {
                eprintln!("mkinitramfs: {w} is built into this kernel: nothing to add");
            }
            !b
        })
        .collect();
    // name -> path, and the loaded bytes (read once: for modinfo and for the archive).
    let (paths, deps) = match read_text("modules.dep") {
        Ok(text) => {
            let map = kmod::parse_modules_dep(&text)?;
            let paths = map
                .iter()
                .map(|(n, m)| (n.clone(), m.path.clone()))
                .collect();
            (paths, Some(map))
        }
        Err(_) => {
            let order = read_text("modules.order").with_context(|| {
                format!(
                    "{} has neither modules.dep nor modules.order: is it a kernel's \
                     lib/modules/<release> directory?",
                    dir.display()
                )
            })?;
            (kmod::paths_by_name(&order), None)
        }
    };
    let paths: BTreeMap<String, String> = paths;
    let mut bytes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut load = |name: &str| -> Result<Vec<u8>, vmm::Error> {
        if let Some(b) = bytes.get(name) {
            return Ok(b.clone());
        }
        let path = paths.get(name).ok_or_else(|| vmm::Error::KernelModule {
            module: name.to_string(),
            reason: format!("not listed in {}", dir.display()),
        })?;
        let b = read_module_file(&dir.join(path)).map_err(|e| vmm::Error::KernelModule {
            module: name.to_string(),
            reason: format!("{e:#}"),
        })?;
        bytes.insert(name.to_string(), b.clone());
        Ok(b)
    };
    let order = kmod::load_order(&wanted, |name| match &deps {
        Some(map) => {
            map.get(name)
                .map(|m| m.deps.clone())
                .ok_or_else(|| vmm::Error::KernelModule {
                    module: name.to_string(),
                    reason: "not in modules.dep".into(),
                })
        }
        None => kmod::modinfo_depends(&load(name)?),
    })?;
    order
        .into_iter()
        .map(|name| {
            let b = load(&name)?;
            // Check that it is a module at all (and readable as one) before shipping it.
            kmod::modinfo(&b)?;
            Ok((name, b))
        })
        .collect()
}

/// A module file's bytes, decompressed when its name says it is compressed.
fn read_module_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else {
        None
    };
    if let Some(tool) = tool {
        let out = Command::new(tool)
            .arg("-dc")
            .arg(path)
            .output()
            .with_context(|| {
                format!("running `{tool} -dc {name}` (install it: apt-get install xz-utils zstd)")
            })?;
        if !out.status.success() {
            bail!(
                "`{tool} -dc {name}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        return Ok(out.stdout);
    }
    let raw = std::fs::read(path).with_context(|| format!("reading {name}"))?;
    if name.ends_with(".ko.gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("gunzip {name}"))?;
        return Ok(out);
    }
    Ok(raw)
}
