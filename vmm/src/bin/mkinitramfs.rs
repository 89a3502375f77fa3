//! `mkinitramfs BUSYBOX OUTPUT`: writes the Linux guest's initramfs (a gzip newc cpio with
//! busybox, its applet links, `/dev/console` and an `/init` that prints
//! `RVMM-LINUX-BOOTED`), reproducibly: the same busybox gives the same bytes.
//!
//! The applet list comes from running `BUSYBOX --list-full` (Debian's busybox-static is a
//! static x86_64 binary, so it runs on any x86_64 Linux host); when it cannot run, only the
//! applets `/init` needs are linked and a warning says so.

use anyhow::{bail, Context};
use clap::Parser;
use std::path::PathBuf;
use std::process::Command;
use vmm::images::initramfs;

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
    let archive = initramfs::linux_guest(busybox, &applets).context("building the archive")?;
    let bytes = archive.to_cpio_gz();

    // Write next to the destination, then rename: a reader never sees half a file.
    let tmp = cli.output.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &cli.output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), cli.output.display()))?;
    println!(
        "{}: {} bytes, {} entries, {} applet links",
        cli.output.display(),
        bytes.len(),
        archive.len(),
        applets.len()
    );
    Ok(())
}
