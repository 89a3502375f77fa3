//! A port write's round trip, side by side:
//!
//! - `bare`: a `KVM_RUN` loop that dispatches nothing (the floor: KVM's own exit cost);
//! - `vmm`: the VMM's path — QSBR offline around `KVM_RUN`, online (a quiescent state) on the
//!   exit, the RCU bus lookup, the device's write, the per-vCPU exit counter.
//!
//! The guest is three real-mode instructions: `mov dx, 0x510; l: out dx, al; jmp l`.
//! Run: `cargo bench -p vmm --bench exit_roundtrip`.

use criterion::{criterion_group, criterion_main, Criterion};
use devices::{Access, Bus, TestCounter};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

struct Guest {
    _mem: GuestMemoryMmap,
    _vm: kvm_ioctls::VmFd,
    vcpu: VcpuFd,
}

fn guest() -> Guest {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let code = [0xba, 0x10, 0x05, 0xee, 0xeb, 0xfd];
    mem.write_slice(&code, GuestAddress(0x1000)).unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: 0x10000,
        userspace_addr: host as u64,
    };
    // SAFETY: the region is a live 64 KiB mapping owned by `mem`, kept in `Guest` for as long
    // as the VM exists.
    unsafe { vm.set_user_memory_region(region).unwrap() };
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let regs = kvm_bindings::kvm_regs {
        rip: 0x1000,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).unwrap();
    Guest {
        _mem: mem,
        _vm: vm,
        vcpu,
    }
}

fn bench(c: &mut Criterion) {
    if std::fs::File::open("/dev/kvm").is_err() {
        eprintln!("skipped: /dev/kvm is not available");
        return;
    }
    let mut g = c.benchmark_group("port_write_round_trip");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(20);

    let mut bare = guest();
    g.bench_function("bare KVM_RUN loop", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                match bare.vcpu.run() {
                    Ok(VcpuExit::IoOut(..)) => {}
                    other => panic!("unexpected exit {other:?}"),
                }
            }
            t.elapsed()
        })
    });

    let mut v = guest();
    let rcu = rcu::Rcu::new();
    let bus = Bus::new("pio", &rcu);
    let counter = Arc::new(TestCounter::default());
    bus.insert(0x510, 2, counter.clone()).unwrap();
    let exits = AtomicU64::new(0);
    let mut me = rcu.register_qsbr();
    g.bench_function("vmm path (QSBR offline/online + RCU bus + device)", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let vcpu = &mut v.vcpu;
                match me.offline_while(|| vcpu.run()) {
                    Ok(VcpuExit::IoOut(port, data)) => {
                        exits.store(exits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                        let _ = bus.write(&Access::new(0, &me), port as u64, data);
                    }
                    other => panic!("unexpected exit {other:?}"),
                }
                me.quiescent_state();
            }
            t.elapsed()
        })
    });
    g.finish();
    assert_eq!(counter.count(), exits.load(Ordering::Relaxed));
}

criterion_group!(benches, bench);
criterion_main!(benches);
