//! Media anchoring: the interface between the call core and the media relay
//! backends (see [`command`]).
pub mod command;
