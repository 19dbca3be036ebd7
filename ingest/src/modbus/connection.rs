//! One endpoint's connection: opened on first use, kept across cycles, dropped after
//! a timeout or I/O error (the stream may then hold a late answer that would be taken
//! for the next request's) and re-opened by the next request.
//!
//! RTU framing has no transaction id, so a late answer cannot be told from the next
//! request's by its content: a serial-to-Ethernet converter may even pass it on over
//! the socket opened after the timeout. Under RTU framing, a connection opened after a
//! timeout (or an answer that was not the request's) waits for a quiet period and
//! discards what arrived in it, and every request first discards whatever the socket
//! already holds (nothing that arrived before a request can be its answer).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_modbus::client::{Client, Context, rtu, tcp};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use super::config::{Endpoint, Framing, RegisterType};
use super::metrics::ModbusMetrics;
use super::plan::{Data, ReadRequest};
use crate::clock::now_ns;

/// Longest wait for a late answer to arrive on an RTU connection opened after a
/// timeout (at most half the timeout): converters pass on what the serial line
/// received as soon as a client connects.
const RTU_QUIET: Duration = Duration::from_millis(100);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// The device answered with an exception.
    Exception(ExceptionCode),
    /// No connection could be opened.
    Connect(String),
    /// No connection within the timeout.
    ConnectTimeout(Duration),
    /// No answer within the timeout.
    Timeout,
    /// The connection failed or the answer made no sense.
    Io(String),
}

impl RequestError {
    /// Worth another try within the cycle: the device may answer next time. An
    /// exception saying the request itself is wrong will not change.
    pub(crate) fn is_transient(&self) -> bool {
        !matches!(
            self,
            RequestError::Exception(
                ExceptionCode::IllegalFunction
                    | ExceptionCode::IllegalDataAddress
                    | ExceptionCode::IllegalDataValue
            )
        )
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Exception(code) => write!(f, "exception {code}"),
            RequestError::Connect(e) => write!(f, "cannot connect: {e}"),
            RequestError::ConnectTimeout(t) => write!(f, "no connection within {t:?}"),
            RequestError::Timeout => f.write_str("no answer within the timeout"),
            RequestError::Io(e) => write!(f, "connection failed: {e}"),
        }
    }
}

/// Counters of request outcomes, looked up once instead of per request.
#[derive(Debug, Clone)]
struct Outcomes {
    ok: Counter,
    exception: Counter,
    timeout: Counter,
    io: Counter,
}

/// The connection of one endpoint task.
pub(crate) struct Connection {
    endpoint: Endpoint,
    timeout: Duration,
    context: Option<Context>,
    /// Whether the open connection has answered a request (so it worked, and a failure
    /// may be a gateway closing it while idle).
    answered: bool,
    /// Whether an answer to a request given up on may still come: the last connection
    /// was dropped after a timeout, or after an answer that was another request's.
    answer_pending: bool,
    outcomes: Outcomes,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("connected", &self.context.is_some())
            .finish()
    }
}

impl Connection {
    pub(crate) fn new(endpoint: Endpoint, timeout: Duration, metrics: &ModbusMetrics) -> Self {
        Self {
            endpoint,
            timeout,
            context: None,
            answered: false,
            answer_pending: false,
            outcomes: Outcomes {
                ok: metrics.request("ok"),
                exception: metrics.request("exception"),
                timeout: metrics.request("timeout"),
                io: metrics.request("io"),
            },
        }
    }

    /// Sends one read to `unit` and waits for the answer; returns it with the time it
    /// arrived (ns since the epoch, whole milliseconds).
    ///
    /// A connection that has answered before and now fails with an I/O error was most
    /// likely closed by the gateway while idle (many close sockets after a minute or
    /// so): the request is sent once more on a new connection, without using up one of
    /// the device's retries, which a device polled with `retries = 0` would not have.
    pub(crate) async fn read(
        &mut self,
        unit: u8,
        request: ReadRequest,
    ) -> Result<(Data, i64), RequestError> {
        let reused = self.context.is_some() && self.answered;
        let result = self.attempt(unit, request).await;
        match result {
            Err(RequestError::Io(error)) if reused => {
                tracing::debug!(endpoint = %self.endpoint, %error, "the kept connection failed; reconnecting");
                self.attempt(unit, request).await
            }
            result => result,
        }
    }

    /// One request, counted; drops the connection when it is out of step.
    async fn attempt(
        &mut self,
        unit: u8,
        request: ReadRequest,
    ) -> Result<(Data, i64), RequestError> {
        let result = self.try_read(unit, request).await;
        let counter = match &result {
            Ok(_) => &self.outcomes.ok,
            Err(RequestError::Exception(_)) => &self.outcomes.exception,
            Err(RequestError::Timeout | RequestError::ConnectTimeout(_)) => &self.outcomes.timeout,
            Err(RequestError::Connect(_) | RequestError::Io(_)) => &self.outcomes.io,
        };
        counter.inc();
        match &result {
            Ok(_) | Err(RequestError::Exception(_)) => self.answered = true,
            Err(RequestError::Timeout | RequestError::Io(_)) => {
                // The stream is out of step with our requests; a fresh one is.
                self.context = None;
                if matches!(result, Err(RequestError::Timeout)) {
                    self.answer_pending = true;
                }
            }
            Err(RequestError::Connect(_) | RequestError::ConnectTimeout(_)) => {}
        }
        result
    }

    async fn try_read(
        &mut self,
        unit: u8,
        request: ReadRequest,
    ) -> Result<(Data, i64), RequestError> {
        let timeout = self.timeout;
        if self.context.is_none() {
            let stream = tokio::time::timeout(timeout, connect(&self.endpoint))
                .await
                .map_err(|_| RequestError::ConnectTimeout(timeout))?
                .map_err(|e| RequestError::Connect(e.to_string()))?;
            let context = match self.endpoint.framing {
                Framing::Tcp => tcp::attach_slave(stream, Slave(1)),
                Framing::RtuOverTcp => {
                    if self.answer_pending {
                        // The answer given up on may still come, and would be taken
                        // for the next request's.
                        tokio::time::sleep(RTU_QUIET.min(timeout / 2)).await;
                        let discarded = discard_readable(&stream)
                            .map_err(|e| RequestError::Io(e.to_string()))?;
                        if discarded > 0 {
                            tracing::debug!(endpoint = %self.endpoint, bytes = discarded, "discarded a late answer after reconnecting");
                        }
                    }
                    rtu::attach_slave(RtuStream(stream), Slave(1))
                }
            };
            self.context = Some(context);
            self.answered = false;
            self.answer_pending = false;
        }
        let context = self.context.as_mut().expect("connected above");
        context.set_slave(Slave(unit));
        let ReadRequest {
            register,
            start,
            count,
        } = request;
        let call = match register {
            RegisterType::Holding => Request::ReadHoldingRegisters(start, count),
            RegisterType::Input => Request::ReadInputRegisters(start, count),
            RegisterType::Coil => Request::ReadCoils(start, count),
            RegisterType::Discrete => Request::ReadDiscreteInputs(start, count),
        };
        let response = match tokio::time::timeout(timeout, context.call(call)).await {
            Err(_) => return Err(RequestError::Timeout),
            // The answer of another unit or function: another request's, late.
            Ok(Err(e @ tokio_modbus::Error::Protocol(_))) => {
                self.answer_pending = true;
                return Err(RequestError::Io(e.to_string()));
            }
            Ok(Err(e)) => return Err(RequestError::Io(e.to_string())),
            Ok(Ok(response)) => response.map_err(RequestError::Exception)?,
        };
        let arrived = now_rounded();
        let count = usize::from(count);
        // tokio-modbus checks the function code; the length is ours to check, since
        // a short answer would shift every value after it. A wrong length is an I/O
        // error, which drops the connection: it is most likely the late answer of
        // another request (under RTU framing, nothing else tells them apart), and this
        // request's answer may still come.
        let data = match response {
            Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words)
                if words.len() == count =>
            {
                Data::Words(words)
            }
            Response::ReadCoils(mut bits) | Response::ReadDiscreteInputs(mut bits)
                if bits.len() >= count =>
            {
                bits.truncate(count);
                Data::Bits(bits)
            }
            other => {
                self.answer_pending = true;
                return Err(RequestError::Io(format!(
                    "asked for {count} values of {register} {start}, got {}",
                    describe(&other)
                )));
            }
        };
        Ok((data, arrived))
    }

    /// Closes the connection, if open.
    pub(crate) async fn close(&mut self) {
        if let Some(mut context) = self.context.take() {
            let _ = tokio::time::timeout(self.timeout, context.disconnect()).await;
        }
    }
}

fn describe(response: &Response) -> String {
    match response {
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
            format!("{} registers", w.len())
        }
        Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => format!("{} bits", b.len()),
        other => format!("{other:?}"),
    }
}

/// Opens a connection, trying each address the host resolves to.
async fn connect(endpoint: &Endpoint) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Requests are a few bytes each and wait for their answer: Nagle's
                // algorithm would only delay them.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolves to no address", endpoint.host),
        )
    }))
}

/// Now, in nanoseconds since the Unix epoch rounded to the millisecond: a Modbus
/// answer's arrival is not known more precisely.
pub(crate) fn now_rounded() -> i64 {
    (now_ns() + 500_000) / 1_000_000 * 1_000_000
}

/// A socket under RTU framing: before each request goes out, whatever the socket
/// already holds is discarded, since it can only be the late answer of a request
/// given up on (tokio-modbus clears only what it has read itself).
#[derive(Debug)]
struct RtuStream(TcpStream);

impl AsyncRead for RtuStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RtuStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = &mut self.get_mut().0;
        let discarded = discard_readable(stream)?;
        if discarded > 0 {
            tracing::debug!(
                bytes = discarded,
                "discarded a late answer before a request"
            );
        }
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Reads and throws away what `stream` holds now, without waiting; returns how many
/// bytes. A closed stream is left for the request to find.
fn discard_readable(stream: &TcpStream) -> io::Result<usize> {
    let mut buf = [0u8; 512];
    let mut total = 0;
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
