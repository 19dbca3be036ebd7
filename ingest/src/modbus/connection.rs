//! One endpoint's connection: opened on first use, kept across cycles, dropped after
//! a timeout or I/O error (the stream may then hold a late answer that would be taken
//! for the next request's) and re-opened by the next request.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio_modbus::client::{Client, Context, rtu, tcp};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use super::config::{Endpoint, Framing, RegisterType};
use super::metrics::ModbusMetrics;
use super::plan::{Data, ReadRequest};

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
            outcomes: Outcomes {
                ok: metrics.request("ok"),
                exception: metrics.request("exception"),
                timeout: metrics.request("timeout"),
                io: metrics.request("io"),
            },
        }
    }

    /// Sends one read to `unit` and waits for the answer; returns it with the time it
    /// arrived (ns since the epoch).
    pub(crate) async fn read(
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
        if matches!(result, Err(RequestError::Timeout | RequestError::Io(_))) {
            // The stream is out of step with our requests; a fresh one is.
            self.context = None;
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
            let context = tokio::time::timeout(timeout, connect(&self.endpoint))
                .await
                .map_err(|_| RequestError::ConnectTimeout(timeout))?
                .map_err(|e| RequestError::Connect(e.to_string()))?;
            self.context = Some(context);
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
        let response = tokio::time::timeout(timeout, context.call(call))
            .await
            .map_err(|_| RequestError::Timeout)?
            .map_err(|e| RequestError::Io(e.to_string()))?
            .map_err(RequestError::Exception)?;
        let arrived = now_ns();
        let count = usize::from(count);
        // tokio-modbus checks the function code; the length is ours to check, since
        // a short answer would shift every value after it.
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
async fn connect(endpoint: &Endpoint) -> io::Result<Context> {
    let mut last = None;
    for addr in tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Requests are a few bytes each and wait for their answer: Nagle's
                // algorithm would only delay them.
                stream.set_nodelay(true)?;
                return Ok(match endpoint.framing {
                    Framing::Tcp => tcp::attach_slave(stream, Slave(1)),
                    Framing::RtuOverTcp => rtu::attach_slave(stream, Slave(1)),
                });
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

/// Nanoseconds since the Unix epoch, rounded to the millisecond: a Modbus answer's
/// arrival is not known more precisely, and round times keep rows of one cycle
/// together.
pub(crate) fn now_ns() -> i64 {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    (ns + 500_000) / 1_000_000 * 1_000_000
}
