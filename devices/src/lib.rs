//! `devices`: the RCU-published PIO and MMIO buses, the 16550 UART and the i8042 reset
//! controller. (Not built yet: see issue 6.)
