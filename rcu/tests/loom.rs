#![cfg(loom)]
#[test]
fn smoke() {
    loom::model(|| {
        let rcu = rcu::Rcu::builder().spin_passes(0).build();
        rcu.synchronize();
    });
}
