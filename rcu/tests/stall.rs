//! Stall warnings: a reader that holds a grace period past the threshold is named, once.

use rcu::Rcu;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if record.level() <= log::Level::Warn {
            self.0.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_stalling_reader_is_reported_once_by_name() {
    let logger: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
    log::set_logger(logger).unwrap();
    log::set_max_level(log::LevelFilter::Warn);

    let rcu = Rcu::builder()
        .stall_timeout(Duration::from_millis(100))
        .build();
    let inside = Arc::new(Barrier::new(2));
    let t = {
        let (rcu, inside) = (rcu.clone(), inside.clone());
        thread::Builder::new()
            .name("slow-reader".into())
            .spawn(move || {
                let mut me = rcu.register_qsbr();
                inside.wait();
                thread::sleep(Duration::from_millis(600)); // online, no quiescent state
                me.quiescent_state();
            })
            .unwrap()
    };
    inside.wait();
    rcu.synchronize();
    t.join().unwrap();

    let s = rcu.stats();
    assert_eq!(s.stalls, 1, "{s:?}");
    assert!(s.longest_grace_period >= Duration::from_millis(100));
    let logs = logger.0.lock().unwrap();
    let stalls: Vec<_> = logs.iter().filter(|l| l.contains("rcu stall")).collect();
    assert_eq!(stalls.len(), 1, "{logs:?}");
    assert!(stalls[0].contains("slow-reader"), "{}", stalls[0]);
    assert!(stalls[0].contains("QSBR thread"), "{}", stalls[0]);

    // A grace period that does not stall is not reported.
    rcu.synchronize();
    assert_eq!(rcu.stats().stalls, 1);
}
