//! Media relay: anchored ports, latched flows and the backends that move the packets.
pub mod xdp;
