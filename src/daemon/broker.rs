//! The embedded MQTT broker (rumqttd), for a single box that has no other broker: `[broker]
//! enabled = true`. It runs on its own threads for the life of the process (rumqttd has no
//! stop), so a reload that changes `[broker]` needs a restart.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::BrokerSettings;

/// Starts the broker and waits until it accepts connections.
pub fn start(settings: &BrokerSettings, max_packet_size: usize) -> Result<(), String> {
    let config = format!(
        r#"
id = 0
[router]
max_connections = 64
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "vigil-embedded"
listen = "{listen}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = {max_packet_size}
max_inflight_count = 200
dynamic_filters = true
"#,
        listen = settings.listen
    );
    let config: rumqttd::Config = toml::from_str(&config).map_err(|e| format!("embedded broker config: {e}"))?;
    if TcpStream::connect_timeout(&settings.listen, Duration::from_millis(200)).is_ok() {
        return Err(format!("broker.listen: {} is already in use by another program", settings.listen));
    }
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                log::error!("the embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|e| format!("cannot start the embedded broker's thread: {e}"))?;
    wait_listening(settings.listen, Duration::from_secs(5))?;
    crate::service::logging::embedded_broker_limit(max_packet_size);
    log::info!("listen={} embedded MQTT broker started", settings.listen);
    Ok(())
}

fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("the embedded broker did not start listening on {addr} within {} s", limit.as_secs()))
}
