//! What udpkit counts, shown to others: the Prometheus text exposition of a monitor's
//! targets, a `/probe`, a server's and a relay's counters (`metrics`), served over a small
//! bounded HTTP endpoint (`http`). The layer above the tools: it reads their counters,
//! never the other way.

pub mod http;
pub mod metrics;
