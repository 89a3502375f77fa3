//! Builds the deliberately broken variants the loom models and stress tests must catch:
//! `RCU_BROKEN=rcu_broken_memb` (a comma-separated list of cfg names) sets those cfgs on this
//! crate only, so switching variants rebuilds `rcu` and its tests, not every dependency (as
//! changing RUSTFLAGS would). See `tests/loom-broken.sh`.

fn main() {
    println!("cargo:rerun-if-env-changed=RCU_BROKEN");
    if let Ok(list) = std::env::var("RCU_BROKEN") {
        for cfg in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            assert!(
                cfg.starts_with("rcu_broken"),
                "RCU_BROKEN={list}: only rcu_broken* cfgs are variants of this crate"
            );
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}
