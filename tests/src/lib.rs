//! `tests`: integration tests that boot real guests by driving the `vmm` binary as a user
//! would. (Not built yet: see issue 6.)
