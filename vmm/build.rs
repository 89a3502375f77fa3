//! Builds the built-in test guest (`../guest`, see guest/README.md) into
//! `$OUT_DIR/guest.bzImage`, which `src/guest_image.rs` embeds.
//!
//! Only what the machine has is used: the `rustc` that cargo runs (`$RUSTC`) compiles the
//! guest's `#![no_std]` Rust for the host's x86_64 target as a staticlib, GNU `as` assembles
//! `entry.s` and `setup.s`, GNU `ld` links the protected-mode part at 0x100000 with
//! `guest.ld`, `objcopy -O binary` flattens it, and this script joins the setup sectors and
//! the payload into a bzImage, filling in the setup header's size fields.

use std::env;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{self, Command};

/// Where the protected-mode part is linked and loaded (setup header `code32_start`).
const LOAD_ADDRESS: u64 = 0x10_0000;
/// The 64-bit entry's offset in the payload (boot protocol: `startup_64`).
const ENTRY_64_OFFSET: u32 = 0x200;
/// Where entry.s puts the image info block in the payload.
const INFO_OFFSET: usize = 0x10;
const INFO_MAGIC: &[u8; 8] = b"RVMGUEST";

// Setup header fields (offsets in the bzImage file).
const HDR_SETUP_SECTS: usize = 0x1f1;
const HDR_SYSSIZE: usize = 0x1f4;
const HDR_BOOT_FLAG: usize = 0x1fe;
const HDR_MAGIC: usize = 0x202;
const HDR_CODE32_START: usize = 0x214;
const HDR_INIT_SIZE: usize = 0x260;
const HDR_KERNEL_INFO_OFFSET: usize = 0x268;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let guest = manifest.join("..").join("guest");
    let guest = guest
        .canonicalize()
        .unwrap_or_else(|e| fail(&format!("cannot find {}: {e}", guest.display())));

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", guest.display());
    rerun_if_changed_under(&guest);

    let image = build_guest(&guest, &out.join("guest")).unwrap_or_else(|e| fail(&e));
    let dest = out.join("guest.bzImage");
    fs::write(&dest, image)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", dest.display())));
}

/// Reports a build failure the way cargo shows it, and stops.
fn fail(msg: &str) -> ! {
    eprintln!("error: building the built-in guest (guest/): {msg}");
    process::exit(1)
}

/// Tells cargo to rerun this script when any file under `dir` changes.
fn rerun_if_changed_under(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rerun_if_changed_under(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// Checks that a binutils tool runs, with an error that says what to install if it does not.
fn check_tool(tool: &str) -> Result<(), String> {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{tool} --version` failed ({}): is it GNU binutils' {tool}?",
            o.status
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(format!(
            "`{tool}` is not on PATH. The guest is assembled and linked with GNU binutils \
             (as, ld, objcopy, objdump): install them (Debian/Ubuntu: `apt-get install binutils`)"
        )),
        Err(e) => Err(format!("cannot run `{tool}`: {e}")),
    }
}

/// Runs a command; on failure, the error shows the command and its output.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{shown} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The target to compile the guest's Rust for: the host's own target when it is an x86_64
/// one (its core library is surely installed), else x86_64-unknown-linux-gnu.
fn guest_rust_target() -> String {
    match env::var("HOST") {
        Ok(host) if host.starts_with("x86_64-") => host,
        _ => "x86_64-unknown-linux-gnu".to_string(),
    }
}

fn build_guest(guest: &Path, work: &Path) -> Result<Vec<u8>, String> {
    for tool in ["as", "ld", "objcopy", "objdump"] {
        check_tool(tool)?;
    }
    fs::create_dir_all(work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());

    // The guest's Rust: a staticlib holding the crate, core and compiler_builtins. Fat LTO
    // recompiles the parts of core it uses with these flags (static, no red zone).
    let lib = work.join("librvmm_guest.a");
    run(Command::new(&rustc)
        .arg("--edition=2021")
        .arg("--crate-type=staticlib")
        .arg("--crate-name=rvmm_guest")
        .arg(format!("--target={}", guest_rust_target()))
        .args(["-C", "panic=abort"])
        .args(["-C", "relocation-model=static"])
        .args(["-C", "code-model=small"])
        .args(["-C", "opt-level=2"])
        .args(["-C", "target-cpu=x86-64"])
        // No SSE: on PVM hosts KVM's instruction emulator runs the guest's code, and it cannot
        // execute SSE arithmetic (pxor, ldmxcsr, ...): "emulation failure". The guest has no
        // floating point; rustc warns that x86_64's float ABI wants SSE2, which is moot here.
        .args(["-C", "target-feature=-sse,-sse2"])
        .args(["-C", "no-redzone=yes"])
        .args(["-C", "force-unwind-tables=no"])
        .args(["-C", "lto=fat"])
        .args(["-C", "codegen-units=1"])
        .args(["-C", "debuginfo=0"])
        .arg(format!("--remap-path-prefix={}=guest", guest.display()))
        .arg("-o")
        .arg(&lib)
        .arg(guest.join("src").join("lib.rs")))?;

    let entry_o = work.join("entry.o");
    run(Command::new("as")
        .args(["--64", "--fatal-warnings", "-o"])
        .arg(&entry_o)
        .arg(guest.join("entry.s")))?;
    let setup_o = work.join("setup.o");
    run(Command::new("as")
        .args(["--64", "--fatal-warnings", "-o"])
        .arg(&setup_o)
        .arg(guest.join("setup.s")))?;

    let elf = work.join("guest.elf");
    run(Command::new("ld")
        .arg("-T")
        .arg(guest.join("guest.ld"))
        .args(["-nostdlib", "-static", "--gc-sections", "--build-id=none"])
        .args(["-z", "noexecstack", "-z", "max-page-size=4096"])
        .arg("-o")
        .arg(&elf)
        .arg(&entry_o)
        .arg(&lib))?;

    check_instructions(&elf)?;

    let payload_bin = work.join("payload.bin");
    run(Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&payload_bin))?;
    let setup_bin = work.join("setup.bin");
    run(Command::new("objcopy")
        .args(["-O", "binary", "-j", ".setup"])
        .arg(&setup_o)
        .arg(&setup_bin))?;

    let setup =
        fs::read(&setup_bin).map_err(|e| format!("cannot read {}: {e}", setup_bin.display()))?;
    let payload = fs::read(&payload_bin)
        .map_err(|e| format!("cannot read {}: {e}", payload_bin.display()))?;
    make_bzimage(setup, payload)
}

/// Fails if the linked guest uses an instruction that PVM's KVM cannot run or emulate: SSE,
/// MMX and x87 register instructions, MXCSR and extended-state instructions, rdtscp, rdpid,
/// cmpxchg16b (see ../shared/KVM-FACTS.md). The AP trampoline, which is 16- and 32-bit code
/// that objdump decodes as 64-bit, is skipped.
fn check_instructions(elf: &Path) -> Result<(), String> {
    const FORBIDDEN: [&str; 14] = [
        "%xmm",
        "%ymm",
        "%zmm",
        "%mm",
        "%st",
        "mxcsr",
        "fxsave",
        "fxrstor",
        "xsave",
        "xrstor",
        "rdtscp",
        "rdpid",
        "cmpxchg16b",
        "vzeroupper",
    ];
    let output = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(elf)
        .output()
        .map_err(|e| format!("cannot run objdump: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "objdump -d {} failed: {}",
            elf.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut in_trampoline = false;
    let mut bad = Vec::new();
    for line in text.lines() {
        if line.ends_with("<ap_trampoline_start>:") {
            in_trampoline = true;
        } else if line.ends_with("<ap_trampoline_end>:") {
            in_trampoline = false;
        }
        if !in_trampoline && FORBIDDEN.iter().any(|f| line.contains(f)) {
            bad.push(line.trim().to_string());
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    bad.truncate(10);
    Err(format!(
        "the guest contains instructions that PVM's KVM cannot emulate (did rustc ignore \
         -C target-feature=-sse,-sse2?):\n  {}",
        bad.join("\n  ")
    ))
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn put_le32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Joins the setup sectors and the payload, filling in `setup_sects`, `syssize`,
/// `init_size` and `kernel_info_offset`.
fn make_bzimage(mut setup: Vec<u8>, mut payload: Vec<u8>) -> Result<Vec<u8>, String> {
    if setup.len() < 1024 || setup.len() & 511 != 0 || setup.len() > 512 * 65 {
        return Err(format!(
            "setup.s gave {} bytes, not 2 to 65 whole sectors",
            setup.len()
        ));
    }
    if setup[HDR_BOOT_FLAG..HDR_BOOT_FLAG + 2] != [0x55, 0xaa]
        || &setup[HDR_MAGIC..HDR_MAGIC + 4] != b"HdrS"
    {
        return Err("setup.s lacks boot_flag 0xaa55 or the HdrS magic at their offsets".into());
    }
    if u64::from(le32(&setup, HDR_CODE32_START)) != LOAD_ADDRESS {
        return Err("setup.s's code32_start is not the link address".into());
    }
    if payload.len() < INFO_OFFSET + 24 || &payload[INFO_OFFSET..INFO_OFFSET + 8] != INFO_MAGIC {
        return Err("the linked guest lacks the RVMGUEST info block at offset 0x10".into());
    }
    let file_size = le32(&payload, INFO_OFFSET + 8) as usize;
    let mem_size = le32(&payload, INFO_OFFSET + 12);
    let entry_64 = le32(&payload, INFO_OFFSET + 16);
    let kernel_info = le32(&payload, INFO_OFFSET + 20);
    // objcopy stops at the last byte of .data; the linker script's size is 16-byte aligned.
    if payload.len() > file_size || file_size - payload.len() >= 16 {
        return Err(format!(
            "objcopy gave {} bytes, the linker script says {file_size}",
            payload.len()
        ));
    }
    payload.resize(file_size, 0);
    if entry_64 != ENTRY_64_OFFSET {
        return Err(format!(
            "the 64-bit entry is at {entry_64:#x}, not {ENTRY_64_OFFSET:#x}"
        ));
    }
    let ki = kernel_info as usize;
    if payload.get(ki..ki + 4) != Some(b"LToP".as_slice()) {
        return Err("kernel_info (LToP) is not where the info block says".into());
    }
    payload.resize(payload.len().next_multiple_of(16), 0);
    let setup_sects = setup.len() / 512 - 1;
    let syssize = u32::try_from(payload.len() / 16).map_err(|_| "payload too large")?;
    let init_size = mem_size.next_multiple_of(4096).max(payload.len() as u32);

    setup[HDR_SETUP_SECTS] = setup_sects as u8;
    put_le32(&mut setup, HDR_SYSSIZE, syssize);
    put_le32(&mut setup, HDR_INIT_SIZE, init_size);
    put_le32(&mut setup, HDR_KERNEL_INFO_OFFSET, kernel_info);

    let mut image = setup;
    image.extend_from_slice(&payload);
    Ok(image)
}
