//! Living under systemd: the notify protocol ([`notify`]) and logging to the journal or to
//! stderr ([`logging`]).

pub mod logging;
pub mod notify;
