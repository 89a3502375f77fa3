//! `benchreport <report> ...`: prints (and for the plots writes) one benchmark report; see
//! the library's docs and `benchreport::USAGE`.

use benchreport::{Error, Result};
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("benchreport: {e}");
        std::process::exit(match e {
            Error::Usage(_) => 2,
            _ => 1,
        });
    }
}

/// Positional arguments and `(name, value)` options.
type Args<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// Splits `args` into positional arguments and `--name VALUE` options from `allowed`.
fn split<'a>(args: &'a [String], allowed: &[&str]) -> Result<Args<'a>> {
    let mut pos = Vec::new();
    let mut opts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            if !allowed.contains(&name) {
                return Err(Error::Usage(format!("unknown option {a}")));
            }
            let v = it
                .next()
                .ok_or_else(|| Error::Usage(format!("{a} needs a value")))?;
            opts.push((name, v.as_str()));
        } else {
            pos.push(a.as_str());
        }
    }
    Ok((pos, opts))
}

fn opt<'a>(opts: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    opts.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn run(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(Error::Usage("which report?".into()));
    };
    let at_most = |pos: &[&str], n: usize| {
        if pos.len() > n {
            Err(Error::Usage(format!("unexpected argument {}", pos[n])))
        } else {
            Ok(())
        }
    };
    match cmd.as_str() {
        "rcu" => {
            let (pos, opts) = split(rest, &["target"])?;
            at_most(&pos, 0)?;
            let target = opt(&opts, "target").map_or_else(benchreport::target_dir, PathBuf::from);
            print!("{}", benchreport::rcu::report(&target.join("rcu-bench"))?);
        }
        "iohandler" => {
            let (pos, _) = split(rest, &[])?;
            at_most(&pos, 1)?;
            let dir = pos.first().map_or_else(
                || benchreport::target_dir().join("criterion"),
                PathBuf::from,
            );
            print!("{}", benchreport::iohandler::report(&dir)?);
        }
        "lookup" => {
            let (pos, opts) = split(rest, &["out"])?;
            at_most(&pos, 1)?;
            let dir = pos.first().map_or_else(
                || benchreport::target_dir().join("criterion"),
                PathBuf::from,
            );
            let out = opt(&opts, "out").map_or_else(
                || benchreport::workspace().join("memory").join("benches"),
                PathBuf::from,
            );
            let (md, svg) = benchreport::lookup::report(&dir)?;
            print!("{md}");
            let md_path = out.join("lookup.md");
            benchreport::error::write(&md_path, &md)?;
            benchreport::error::write(&out.join("lookup.svg"), &svg)?;
            eprintln!("wrote {} and lookup.svg", md_path.display());
        }
        "vm-lookup" => {
            let (pos, opts) = split(rest, &["svg"])?;
            at_most(&pos, 1)?;
            let Some(json) = pos.first() else {
                return Err(Error::Usage("vm-lookup needs the results file".into()));
            };
            let svg_path = PathBuf::from(opt(&opts, "svg").unwrap_or("docs/lookup-bench.svg"));
            let (md, svg) = benchreport::vm_lookup::report_file(std::path::Path::new(json))?;
            if let Some(parent) = svg_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                    path: parent.to_owned(),
                    source,
                })?;
            }
            benchreport::error::write(&svg_path, &svg)?;
            print!("{md}");
            println!("\nChart: {}", svg_path.display());
        }
        "-h" | "--help" | "help" => println!("{}", benchreport::USAGE),
        other => return Err(Error::Usage(format!("unknown report {other}"))),
    }
    Ok(())
}
