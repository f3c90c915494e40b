//! Placeholder until the proxy core lands: the listener, the tower stack and graceful shutdown.

use crate::settings::Settings;

pub fn run_until_signal(_settings: Settings) -> std::io::Result<()> {
    Err(std::io::Error::other("proxy not built yet"))
}
