//! What a user talks to: the QMP control socket (transport and commands, and the protocol
//! in [`qmp`]), the console (guest output and stdin) and the terminal.

pub mod console;
pub mod console_out;
pub mod control;
pub mod qmp;
pub mod term;
