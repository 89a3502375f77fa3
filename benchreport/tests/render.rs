//! Renders every report from the fixture inputs under `tests/fixtures/` and compares the
//! result with the expected output checked in beside them. The expected files were written
//! by the former writers (`rcu/benches/report.py`, `iohandler/benches/table.py`,
//! `memory/examples/lookup_report.rs`, `scripts/bench-lookup.py`) on the same inputs, so
//! these tests pin "the port prints the same bytes". The inputs are real benchmark output
//! (short runs), except the VMM lookup runs, which are made up (running the VMM needs KVM).
//!
//! To refresh after a deliberate change: `BENCHREPORT_BLESS=1 cargo test -p benchreport`.

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Compares `got` with the file `name` of fixture `dir` (or rewrites it when blessing).
fn check(dir: &str, name: &str, got: &str) {
    let path = fixtures().join(dir).join(name);
    if std::env::var_os("BENCHREPORT_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap();
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{} differs from the rendering, first at line {}:\n got: {:?}\nwant: {:?}",
            path.display(),
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        );
    }
}

#[test]
fn rcu_tables_and_targets() {
    let md = benchreport::rcu::report(&fixtures().join("rcu/rcu-bench")).unwrap();
    check("rcu", "expected.md", &md);
}

#[test]
fn rcu_instructions_only() {
    // Only callgrind's rows: the instruction table stands in for the read side.
    let dir = std::env::temp_dir().join(format!("benchreport-cg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("rcu/rcu-bench/callgrind.jsonl"),
        dir.join("callgrind.jsonl"),
    )
    .unwrap();
    let md = benchreport::rcu::report(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    check("rcu", "expected-callgrind-only.md", &md.unwrap());
}

#[test]
fn iohandler_table() {
    let md = benchreport::iohandler::report(&fixtures().join("iohandler/criterion")).unwrap();
    check("iohandler", "expected.md", &md);
}

#[test]
fn memory_lookup_tables_and_chart() {
    let (md, svg) = benchreport::lookup::report(&fixtures().join("lookup/criterion")).unwrap();
    check("lookup", "expected.md", &md);
    check("lookup", "expected.svg", &svg);
}

#[test]
fn vm_lookup_tables_and_chart() {
    let (md, svg) =
        benchreport::vm_lookup::report_file(&fixtures().join("vm-lookup/results.json")).unwrap();
    check("vm-lookup", "expected.md", &md);
    check("vm-lookup", "expected.svg", &svg);
}

#[test]
fn svg_is_reproducible() {
    let dir = fixtures().join("lookup/criterion");
    let a = benchreport::lookup::report(&dir).unwrap();
    let b = benchreport::lookup::report(&dir).unwrap();
    assert_eq!(a, b);
}

/// Bad input gives an error naming the file (and line), never a panic.
#[test]
fn bad_input_is_an_error() {
    let dir = std::env::temp_dir().join(format!("benchreport-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = benchreport::rcu::report(&dir).unwrap_err();
    assert!(matches!(e, benchreport::Error::NoResults { .. }), "{e}");
    assert!(
        e.to_string().contains("run rcu/benches/run.sh first"),
        "{e}"
    );

    std::fs::write(
        dir.join("read.jsonl"),
        "{\"group\": \"read_side_1t\", \"id\": \"a\", \"median_ns\": 1.0}\n{\"group\": 3}\n",
    )
    .unwrap();
    let e = benchreport::rcu::report(&dir).unwrap_err();
    match &e {
        benchreport::Error::Json { path, line, .. } => {
            assert!(path.ends_with("read.jsonl"));
            assert_eq!(*line, 2);
        }
        other => panic!("wrong error {other}"),
    }

    let json = dir.join("results.json");
    std::fs::write(&json, "{\"params\": {}, \"runs\": []}").unwrap();
    assert!(matches!(
        benchreport::vm_lookup::report_file(&json),
        Err(benchreport::Error::Json { .. })
    ));
    assert!(matches!(
        benchreport::iohandler::report(&dir),
        Err(benchreport::Error::NoResults { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vmm_result_json_reads() {
    let dir = std::env::temp_dir().join(format!("benchreport-vmm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("result.json");
    // A --result-json line as the VMM writes it (keys sorted).
    std::fs::write(
        &path,
        r#"{"console":{"guest_bytes":12},"detail":null,"exit_reason":"expect","exit_status":0,"exits":[{"interrupted":0,"mmio":3,"other":1,"pio":40}],"expect":"ok","fail_line":null,"fail_on":[],"fail_pattern":null,"guest_resident_kib":2048,"kernel":"builtin","mem_mib":64,"outcome":"success","rss_kib":4096,"serial_log":null,"stuck_vcpus":[],"test_counter":0,"time_to_first_run_ms":1.5,"time_to_marker_ms":20.25,"total_ms":30.0,"unassigned":{"mmio_reads":0,"mmio_writes":0,"pio_reads":2,"pio_writes":1},"vcpus":1,"vmm_overhead_kib":2048,"vmm_private_overhead_kib":512}"#,
    )
    .unwrap();
    let r = benchreport::vmm_run::load(&path).unwrap();
    assert_eq!(r.exits[0].pio, 40);
    assert_eq!(r.time_to_marker_ms, Some(20.25));
    std::fs::write(&path, r#"{"outcome":"success"}"#).unwrap();
    assert!(matches!(
        benchreport::vmm_run::load(&path),
        Err(benchreport::Error::Json { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
