//! A gateway's settings, and the zenoh configuration the tests and examples use: peers on
//! explicit endpoints, multicast scouting off.

use std::time::Duration;

use crate::error::Result;

/// What a gateway does when its remote side disappears before the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLoss {
    /// End with [`Error::RemoteGone`](crate::Error::RemoteGone) (the default).
    End,
    /// Wait at most `within` for a new remote side on the key (a restarted process, say) and go
    /// on with it; past that, end with [`Error::NoRemote`](crate::Error::NoRemote).
    ///
    /// The new side may show up before zenoh reports the old one gone (a restarted process
    /// connects while the old one's connection is still being torn down, or its host is silent
    /// and the lease has not run out). While two remote tokens are alive, the gateway holds its
    /// stream and waits at most [`Options::handover`] for one of them to go: if the current
    /// one goes, the gateway goes on with the new one; if both stay, it ends with
    /// [`Violation::SecondRemote`](crate::Violation::SecondRemote).
    ///
    /// Records the lost side had not yet passed on are lost with it: a publishing gateway goes
    /// on with the next record of its local stream, a subscribing one with the first record of
    /// the new publisher's stream. The sequence numbers say where each stream resumed; nothing is
    /// delivered twice. [`Summary::resumes`](crate::Summary::resumes) counts the losses
    /// survived.
    Resume {
        /// How long to wait for the new remote side.
        within: Duration,
    },
}

/// Settings of a gateway ([`publish`](crate::publish), [`subscribe`](crate::subscribe)).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let options = sp_zenoh::Options::new()
///     .connect_timeout(Duration::from_secs(30))
///     .on_loss(sp_zenoh::OnLoss::Resume { within: Duration::from_secs(5) });
/// assert_eq!(options.max_value_len_bytes(), 256 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) on_loss: OnLoss,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_value_len: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) handover: Duration,
}

impl Options {
    /// Defaults: end on loss, 10 s for the remote side to appear, values up to 256 MiB, samples
    /// of up to 1 MiB of records when several are waiting, 5 s of lingering after the end, 20 s
    /// for a handover.
    pub fn new() -> Self {
        Self {
            on_loss: OnLoss::End,
            connect_timeout: Duration::from_secs(10),
            max_value_len: 256 << 20,
            batch_bytes: 1 << 20,
            linger: Duration::from_secs(5),
            handover: Duration::from_secs(20),
        }
    }

    /// What to do when the remote side disappears mid-stream.
    #[must_use]
    pub fn on_loss(mut self, on_loss: OnLoss) -> Self {
        self.on_loss = on_loss;
        self
    }

    /// How long a gateway waits for its remote side to appear before it ends with
    /// [`Error::NoRemote`](crate::Error::NoRemote).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest encoding a publishing gateway sends (default 256 MiB); a longer value is
    /// refused with [`Refusal::TooLarge`](crate::Refusal::TooLarge) before anything of it is
    /// sent. The receiving zenoh must accept samples this large
    /// (`transport/link/rx/max_message_size`, 1 GiB by default).
    #[must_use]
    pub fn max_value_len(mut self, n_bytes: usize) -> Self {
        self.max_value_len = n_bytes;
        self
    }

    /// The most bytes of records a publishing gateway puts in one sample when several records
    /// are already waiting in its ring (default 1 MiB; a larger record goes alone). It never
    /// waits for a record to fill a sample, so batching adds no delay; 0 sends one record per
    /// sample. Much of zenoh's CPU time goes per sample, not per byte, so large samples are what
    /// let a stream of 64 KiB records through the gateways keep up with zenoh's own 64 KiB
    /// samples (docs/benchmarks.md); the subscriber's zenoh should have a receive buffer that
    /// holds a sample ([`RX_BUFFER_BYTES`]).
    #[must_use]
    pub fn batch_bytes(mut self, n_bytes: usize) -> Self {
        self.batch_bytes = n_bytes;
        self
    }

    /// After the end of the stream, how long a subscribing gateway waits for the publisher to
    /// see that everything arrived (default 5 s). The stream is complete either way; the wait
    /// only spares the publisher a [`RemoteGone`](crate::Error::RemoteGone) when this process
    /// exits at once.
    #[must_use]
    pub fn linger(mut self, timeout: Duration) -> Self {
        self.linger = timeout;
        self
    }

    /// With [`OnLoss::Resume`], how long two remote tokens may be alive at once before the
    /// gateway ends with [`Violation::SecondRemote`](crate::Violation::SecondRemote) (default
    /// 20 s, twice zenoh's default lease). It is the time zenoh may take to report the old
    /// remote gone once a new one has appeared: a remote whose process died goes within moments,
    /// one whose host went silent within the lease (`transport/link/tx/lease`, 10 s by default)
    /// of its last message. A gateway cannot read the lease from its session (zenoh's
    /// `Session::config` is unstable), so with a longer lease set this longer too. With
    /// [`OnLoss::End`] a second remote is refused at once.
    #[must_use]
    pub fn handover(mut self, grace: Duration) -> Self {
        self.handover = grace;
        self
    }

    /// The handover grace under `Resume`, `None` under `End` (a second remote is refused at
    /// once).
    pub(crate) fn handover_grace(&self) -> Option<Duration> {
        match self.on_loss {
            OnLoss::End => None,
            OnLoss::Resume { .. } => Some(self.handover),
        }
    }

    /// The longest encoding a publishing gateway sends.
    pub fn max_value_len_bytes(&self) -> usize {
        self.max_value_len
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`peer_config`] gives zenoh's `transport/link/rx/buffer_size`: room for the fragments of
/// two full samples ([`Options::batch_bytes`]'s default). zenoh's default, one 64 KiB batch, keeps
/// a single receive buffer per link: every further fragment of a large sample gets a new,
/// zero-filled one, and the heap's growing and shrinking under them cost the receiving side as
/// much again as the data (docs/benchmarks.md). zenoh's own configuration advises raising it for
/// large messages.
pub const RX_BUFFER_BYTES: usize = 2 << 20;

/// A zenoh configuration for a peer that listens on `listen` and connects to `connect` (zenoh
/// endpoints such as `tcp/127.0.0.1:7447`), with multicast scouting off: it meets exactly the
/// peers it is told of, and a receive buffer of [`RX_BUFFER_BYTES`] per link (a configuration
/// of one's own should raise zenoh's too, to hold a sample). Anything else is set on the result
/// with zenoh's own [`insert_json5`](zenoh::Config::insert_json5) (the lease after which a
/// silent peer counts as gone is `transport/link/tx/lease`, in milliseconds).
///
/// # Errors
/// [`Error::Zenoh`](crate::Error::Zenoh) for an endpoint zenoh cannot parse.
///
/// # Examples
/// ```
/// let mut config = sp_zenoh::peer_config(&["tcp/127.0.0.1:7447"], &[])?;
/// config.insert_json5("transport/link/tx/lease", "2000")?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub fn peer_config(listen: &[&str], connect: &[&str]) -> Result<zenoh::Config> {
    let mut config = zenoh::Config::default();
    config.insert_json5("mode", "\"peer\"")?;
    config.insert_json5("scouting/multicast/enabled", "false")?;
    config.insert_json5("listen/endpoints", &json_list(listen))?;
    config.insert_json5("connect/endpoints", &json_list(connect))?;
    config.insert_json5(
        "transport/link/rx/buffer_size",
        &RX_BUFFER_BYTES.to_string(),
    )?;
    Ok(config)
}

/// `["a", "b"]`, each endpoint quoted as a JSON string.
fn json_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|item| {
            let escaped = item.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\"")
        })
        .collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_config_sets_endpoints_and_turns_scouting_off() {
        let config = peer_config(&["tcp/127.0.0.1:7447"], &["tcp/127.0.0.1:7448"]).unwrap();
        assert_eq!(config.get_json("mode").unwrap(), "\"peer\"");
        assert_eq!(
            config.get_json("scouting/multicast/enabled").unwrap(),
            "false"
        );
        assert!(
            config
                .get_json("listen/endpoints")
                .unwrap()
                .contains("tcp/127.0.0.1:7447")
        );
        assert!(
            config
                .get_json("connect/endpoints")
                .unwrap()
                .contains("tcp/127.0.0.1:7448")
        );
        assert_eq!(
            config.get_json("transport/link/rx/buffer_size").unwrap(),
            RX_BUFFER_BYTES.to_string()
        );
        assert!(peer_config(&["no-such-protocol"], &[]).is_err());
    }
}
