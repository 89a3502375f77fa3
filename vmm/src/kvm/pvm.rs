//! Detecting a KVM that cannot run unmodified Linux kernels (PVM: no vmx/svm).

use std::sync::OnceLock;

/// What the host's KVM is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKvm {
    /// The CPU advertises vmx or svm.
    pub hardware_virt: bool,
    /// The kvm_pvm module is loaded.
    pub pvm_module: bool,
}

impl HostKvm {
    /// Whether unmodified Linux kernels can be expected to boot.
    pub fn runs_linux(&self) -> bool {
        self.hardware_virt && !self.pvm_module
    }
}

/// Probes /proc/cpuinfo and /sys/module once.
pub fn host() -> &'static HostKvm {
    static HOST: OnceLock<HostKvm> = OnceLock::new();
    HOST.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let hardware_virt = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        let pvm_module = std::path::Path::new("/sys/module/kvm_pvm").exists();
        HostKvm {
            hardware_virt,
            pvm_module,
        }
    })
}

/// The one-line warning for booting a Linux kernel on such a host.
pub fn linux_warning() -> Option<String> {
    let h = host();
    (!h.runs_linux()).then(|| {
        format!(
            "this host's KVM cannot run unmodified Linux kernels ({}): the kernel will most \
             likely die in KVM's instruction emulator. The built-in guest (no --kernel) runs \
             here; Linux guests need a host with hardware virtualization (vmx/svm).",
            if h.pvm_module {
                "it is PVM, the kvm_pvm module"
            } else {
                "the CPU has no vmx/svm flag"
            }
        )
    })
}

/// Appended to emulation-failure diagnostics.
pub fn emulation_hint() -> String {
    if host().runs_linux() {
        String::new()
    } else {
        " This host's KVM is PVM (no hardware virtualization): unmodified Linux kernels die \
         exactly like this here; boot them on a host with vmx/svm."
            .into()
    }
}
