//! `memory`: guest RAM blocks, the RCU-published RAM list with a per-reader MRU hint, and
//! lock-free guest-physical to host-virtual lookup for vCPU threads. (Not built yet: see issue 4.)
