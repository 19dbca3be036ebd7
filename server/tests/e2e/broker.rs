//! A real Mosquitto broker for the MQTT tests, and a QoS 1 publisher that survives
//! broker restarts.
//!
//! The broker runs from the Debian package (`mosquitto`, installed by the test command)
//! on a free port with persistence in its own temporary directory, so a restarted
//! broker still holds the sessions and queued messages of its clients, as a production
//! broker does.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tempfile::TempDir;

/// Where the Debian package puts the broker.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto process on 127.0.0.1 and a free port.
#[derive(Debug)]
pub(crate) struct Broker {
    child: Option<Child>,
    port: u16,
    /// A second listener with TLS, when started with [`Broker::start_with_tls`].
    tls_port: Option<u16>,
    dir: TempDir,
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub(crate) fn start() -> Broker {
        Broker::start_inner(false)
    }

    /// Starts a broker with a plain listener and a TLS one, whose certificate is signed
    /// by a CA made for this broker ([`Broker::ca_file`]).
    pub(crate) fn start_with_tls() -> Broker {
        Broker::start_inner(true)
    }

    fn start_inner(tls: bool) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("gridlake-mosquitto-")
            .tempdir()
            .expect("create broker dir");
        let port = free_port();
        let mut conf = format!(
            // Run as root (CI), Mosquitto drops to the `mosquitto` user, which cannot
            // read this root-owned directory: no persistence, no log, no TLS key.
            // `user root` keeps it as it was started; as any other user it is ignored.
            "user root\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             max_queued_messages 0\n\
             max_inflight_messages 1000\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n",
            dir = dir.path().display()
        );
        let tls_port = tls.then(|| {
            make_certificates(dir.path());
            let tls_port = free_port();
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\n\
                 cafile {dir}/ca.pem\n\
                 certfile {dir}/server.pem\n\
                 keyfile {dir}/server.key\n",
                dir = dir.path().display()
            ));
            tls_port
        });
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write broker config");
        let mut broker = Broker {
            child: None,
            port,
            tls_port,
            dir,
        };
        broker.start_again();
        broker
    }

    fn start_again(&mut self) {
        assert!(
            std::path::Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: the test command installs the Debian package `mosquitto`"
        );
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {} within 10 s; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and starts it
    /// again on the same port and files.
    pub(crate) fn restart(&mut self) {
        let mut child = self.child.take().expect("broker is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        kill(pid, Signal::SIGTERM).expect("signal mosquitto");
        child.wait().expect("wait for mosquitto");
        self.start_again();
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `mqtts://127.0.0.1:PORT` of the TLS listener.
    pub(crate) fn tls_url(&self) -> String {
        format!(
            "mqtts://127.0.0.1:{}",
            self.tls_port.expect("broker started with TLS")
        )
    }

    /// The PEM file of the CA that signed the TLS listener's certificate.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The broker's log, for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }
}

/// A port the OS just handed out and released: another process could take it in
/// between, which a rerun would survive; in practice it does not happen on a test machine.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the `openssl`
/// command line (Debian's `openssl` package).
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n",
    )
    .expect("write extensions");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=gridlake test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Publishes `messages` with QoS 1, one after another, each until the broker
/// acknowledges it: a message whose PUBACK does not arrive (the broker went away) is
/// published again after reconnecting. A message may thus reach the broker twice,
/// which is what QoS 1 allows; it never reaches it zero times. Returns once every
/// message is acknowledged by the broker.
pub(crate) async fn publish_all(port: u16, client_id: &str, messages: Vec<(String, Vec<u8>)>) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_max_packet_size(Some(16 * 1024 * 1024));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let overall = Instant::now() + Duration::from_secs(120);
    for (topic, payload) in messages {
        'message: loop {
            assert!(
                Instant::now() < overall,
                "publishing took longer than 120 s"
            );
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("queue publish");
            let give_up = Instant::now() + Duration::from_secs(3);
            // The packet id this copy went out with: a late PUBACK of an earlier copy
            // must not count for a later message.
            let mut sent_as = None;
            loop {
                let remaining = give_up.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, eventloop.poll()).await {
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => sent_as = Some(pkid),
                    Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) if Some(ack.pkid) == sent_as => {
                        break 'message;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => {
                        // Broker gone: rumqttc reconnects on the next poll; the message
                        // is published again below.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'message;
                    }
                    Err(_) => continue 'message,
                }
            }
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}
