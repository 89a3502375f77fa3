//! The control protocol's parser and executor (`Control::request_now`, what the socket calls for
//! each line) on a real VM: KVM, the built-in guest loaded, the devices on the buses, the
//! control socket bound, the vCPUs running the guest's `echo` workload (which waits for
//! serial input). Requests run as on the main loop, under the BQL; the loop itself is not
//! run. Input: request lines. Every line must get one JSON object back, `return` or
//! `error`, and nothing may panic or hang. What an input adds (RAM blocks, test devices) is
//! removed after it, so inputs do not pile up state; `quit` is for good (later inputs see a
//! stopped VM, as a client would).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vmm::frontend::control::Control;
use vmm::kvm::vm::{Running, SerialMode, Vm, VmConfig, VmShared};
use vmm::x86_64::boot::{BootConfig, KernelSource};

struct Env {
    ctl: Arc<Control>,
    shared: Arc<VmShared>,
    bql: Arc<iohandler::Bql>,
    _running: Running,
    _main_loop: iohandler::MainLoop,
}

fn make_env() -> Env {
    let main_loop = iohandler::MainLoop::new().expect("creating a main loop");
    let cfg = VmConfig {
        boot: BootConfig {
            kernel: KernelSource::Builtin,
            initrd: None,
            cmdline: "workload=echo".into(),
            mem: 32 << 20,
            cpus: 1,
            hugepages: false,
        },
        serial: SerialMode::None,
        timeout: None,
        expect: None,
        log: None,
        log_limit: None,
        process_start: None,
        // A lock-based design, so that RAM updates also run its listener's transaction.
        ram_lookup: vmm::bench::lookup::LookupDesign::RwLock,
        disks: Vec::new(),
        fail_on: Vec::new(),
    };
    // As in the VMM: the VM's RCU callbacks run under the BQL that the requests hold.
    let bql = iohandler::Bql::new();
    let vm = Vm::new_in(cfg, iohandler::rcu_domain(&bql)).unwrap_or_else(|e| {
        panic!("the control target needs a real VM and could not create one: {e}")
    });
    let running = vm.start();
    let shared = running.shared().clone();
    let path = std::env::temp_dir().join(format!("vmm-fuzz-control-{}.sock", std::process::id()));
    // The VMM's default cap: the boot memory plus 256 MiB of hot-added RAM.
    let max_memory = (32 << 20) + (256 << 20);
    let ctl = Control::start(&path, &main_loop.handle(), shared.clone(), max_memory)
        .unwrap_or_else(|e| panic!("binding the control socket {}: {e}", path.display()));
    // Requests are handed to `request_now` directly; the listener needs no name (and libFuzzer
    // exits without running destructors, which would leave the file behind).
    let _ = std::fs::remove_file(&path);
    Env {
        ctl,
        shared,
        bql,
        _running: running,
        _main_loop: main_loop,
    }
}

thread_local! {
    static ENV: Env = make_env();
}

fuzz_target!(|data: &[u8]| {
    ENV.with(|env| {
        {
            // Handlers run under the BQL on the main loop; so do these.
            let _bql = env.bql.lock();
            for line in data.split(|&b| b == b'\n').take(64) {
                let Some(reply) = env.ctl.request_now(line) else {
                    assert!(String::from_utf8_lossy(line).trim().is_empty());
                    continue;
                };
                let obj = reply.as_object().expect("a reply is a JSON object");
                assert!(
                    obj.contains_key("return") != obj.contains_key("error"),
                    "{reply}"
                );
            }
        }
        // Undo what the input added.
        let s = &env.shared;
        for b in s.ram.snapshot_owned().blocks() {
            if b.name() != "ram-low" && b.name() != "ram-high" {
                let id = b.id();
                s.ram.remove(id).expect("removing a hot-added block");
            }
        }
        for (base, _, name) in s.pio.devices() {
            if name.starts_with("test@") {
                s.pio.remove(base).expect("removing a test device");
            }
        }
        s.resume();
    })
});
