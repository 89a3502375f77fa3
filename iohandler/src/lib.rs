//! `iohandler`: the main loop on mio, RCU-managed fd handlers, bottom halves, timers and the
//! big global lock under which `call_rcu` callbacks run. (Not built yet: see issue 5.)
