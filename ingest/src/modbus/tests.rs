//! The collector against real Modbus servers on loopback sockets: tokio-modbus servers
//! holding register images, per unit id, that tests can change or drop mid-run. Rows
//! are read back from a real store.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType as ArrowType;
use devices::modbus::{ByteOrder, DataType, encode_bytes};
use devices::sunspec::{self, EncodeValue};
use storage::{Store, StoreConfig, TimeRange};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::*;

/// What one unit id serves.
#[derive(Debug, Default, Clone)]
struct Image {
    holding: BTreeMap<u16, u16>,
    input: BTreeMap<u16, u16>,
    coils: BTreeMap<u16, bool>,
    discrete: BTreeMap<u16, bool>,
}

impl Image {
    fn put_holding(&mut self, start: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            self.holding.insert(start + i as u16, *w);
        }
    }

    fn put_input(&mut self, start: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            self.input.insert(start + i as u16, *w);
        }
    }
}

/// A Modbus server's state: images by unit id (units without one get no answer, as
/// behind a gateway whose device is absent), and what it saw.
#[derive(Debug, Default, Clone)]
struct Served {
    units: Arc<Mutex<HashMap<u8, Image>>>,
    requests: Arc<Mutex<Vec<(u8, Request<'static>)>>>,
    connections: Arc<AtomicUsize>,
    /// Close each connection after its first answer, as gateways that close idle
    /// sockets do between cycles.
    close_after_answer: bool,
}

impl Served {
    fn with(unit: u8, image: Image) -> Self {
        let served = Self::default();
        served.set(unit, image);
        served
    }

    fn set(&self, unit: u8, image: Image) {
        self.units.lock().unwrap().insert(unit, image);
    }

    fn requests_of(&self, unit: u8) -> Vec<Request<'static>> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(u, _)| *u == unit)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn read<T: Copy>(map: &BTreeMap<u16, T>, start: u16, count: u16) -> Result<Vec<T>, ExceptionCode> {
    (u32::from(start)..u32::from(start) + u32::from(count))
        .map(|a| {
            u16::try_from(a)
                .ok()
                .and_then(|a| map.get(&a).copied())
                .ok_or(ExceptionCode::IllegalDataAddress)
        })
        .collect()
}

impl Service for Served {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.requests
            .lock()
            .unwrap()
            .push((req.slave, req.request.clone()));
        let units = self.units.lock().unwrap();
        let Some(image) = units.get(&req.slave) else {
            return std::future::ready(Ok(None));
        };
        let result = match req.request {
            Request::ReadHoldingRegisters(a, n) => {
                read(&image.holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                read(&image.input, a, n).map(Response::ReadInputRegisters)
            }
            Request::ReadCoils(a, n) => read(&image.coils, a, n).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => {
                read(&image.discrete, a, n).map(Response::ReadDiscreteInputs)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        std::future::ready(result.map(Some))
    }
}

/// A server's end of a connection; ends it after the first answer when
/// [`Served::close_after_answer`] says so.
#[derive(Debug)]
struct ServerStream {
    stream: tokio::net::TcpStream,
    close_after_answer: bool,
    answered: bool,
}

impl tokio::io::AsyncRead for ServerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.close_after_answer && this.answered {
            // End of stream: the server ends the connection and closes the socket.
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ServerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = std::pin::Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(written, std::task::Poll::Ready(Ok(_))) {
            this.answered = true;
        }
        written
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A running server; aborting `task` drops its listener and connections.
#[derive(Debug)]
struct TestServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

async fn serve(served: &Served, framing: Framing) -> TestServer {
    serve_at(served, framing, "127.0.0.1:0".parse().unwrap()).await
}

async fn serve_at(served: &Served, framing: Framing, addr: SocketAddr) -> TestServer {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = served.clone();
    let task = tokio::spawn(async move {
        let on_connected = |stream: tokio::net::TcpStream, _: SocketAddr| {
            let served = served.clone();
            async move {
                served.connections.fetch_add(1, Ordering::SeqCst);
                let stream = ServerStream {
                    stream,
                    close_after_answer: served.close_after_answer,
                    answered: false,
                };
                Ok::<_, std::io::Error>(Some((served, stream)))
            }
        };
        let result = match framing {
            Framing::Tcp => {
                tokio_modbus::server::tcp::Server::new(listener)
                    .serve(&on_connected, |_| {})
                    .await
            }
            Framing::RtuOverTcp => {
                tokio_modbus::server::rtu_over_tcp::Server::new(listener)
                    .serve(&on_connected, |_| {})
                    .await
            }
        };
        if let Err(e) = result {
            panic!("test server failed: {e}");
        }
    });
    TestServer { addr, task }
}

/// A server that accepts connections and never answers.
async fn black_hole() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// Waits for `check` to give a value; panics with `what` after a deadline generous
/// enough for a loaded CI machine.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every row of `table`, each as column → value (as text; nulls left out; time as
/// ns).
fn rows(store: &Store, table: &str) -> Vec<BTreeMap<String, String>> {
    let Ok(batches) = store.scan(table, None, TimeRange::ALL) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let columns: Vec<StringArray> = batch
            .columns()
            .iter()
            .map(|c| {
                let c = if matches!(c.data_type(), ArrowType::Timestamp(..)) {
                    arrow::compute::cast(c, &ArrowType::Int64).unwrap()
                } else {
                    Arc::clone(c)
                };
                let text = arrow::compute::cast(&c, &ArrowType::Utf8).unwrap();
                text.as_any().downcast_ref::<StringArray>().unwrap().clone()
            })
            .collect();
        for row in 0..batch.num_rows() {
            let mut map = BTreeMap::new();
            for (field, column) in schema.fields().iter().zip(&columns) {
                if column.is_valid(row) {
                    map.insert(field.name().clone(), column.value(row).to_string());
                }
            }
            out.push(map);
        }
    }
    out
}

fn rows_of(store: &Store, table: &str, device: &str) -> Vec<BTreeMap<String, String>> {
    rows(store, table)
        .into_iter()
        .filter(|r| r.get("device_id").map(String::as_str) == Some(device))
        .collect()
}

fn number(row: &BTreeMap<String, String>, column: &str) -> f64 {
    row.get(column)
        .unwrap_or_else(|| panic!("no {column} in {row:?}"))
        .parse()
        .unwrap()
}

fn open_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    (dir, store)
}

fn config(text: &str) -> ModbusConfig {
    toml::from_str(&format!("enabled = true\nbatch_linger = \"10ms\"\n{text}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn snapshot(collector: &ModbusCollector, device: &str) -> DeviceSnapshot {
    collector
        .devices()
        .into_iter()
        .find(|d| d.device_id == device)
        .unwrap()
}

/// A value of each type, as big-endian bytes and as the number it means.
fn sample(data_type: DataType) -> (Vec<u8>, f64) {
    match data_type {
        DataType::Int16 => ((-1234i16).to_be_bytes().to_vec(), -1234.0),
        DataType::Uint16 => (54321u16.to_be_bytes().to_vec(), 54321.0),
        DataType::Acc16 => (4321u16.to_be_bytes().to_vec(), 4321.0),
        DataType::Int32 => ((-123_456_789i32).to_be_bytes().to_vec(), -123_456_789.0),
        DataType::Uint32 => (3_000_000_000u32.to_be_bytes().to_vec(), 3e9),
        DataType::Acc32 => (4_000_000_000u32.to_be_bytes().to_vec(), 4e9),
        DataType::Int64 => (
            (-1_234_567_890_123i64).to_be_bytes().to_vec(),
            -1_234_567_890_123.0,
        ),
        DataType::Uint64 => (
            12_345_678_901_234u64.to_be_bytes().to_vec(),
            12_345_678_901_234.0,
        ),
        DataType::Acc64 => (987_654_321_987u64.to_be_bytes().to_vec(), 987_654_321_987.0),
        DataType::Float32 => ((-12.5f32).to_be_bytes().to_vec(), -12.5),
        DataType::Float64 => (1234.5678f64.to_be_bytes().to_vec(), 1234.5678),
    }
}

const TYPES: [DataType; 11] = [
    DataType::Int16,
    DataType::Uint16,
    DataType::Acc16,
    DataType::Int32,
    DataType::Uint32,
    DataType::Acc32,
    DataType::Int64,
    DataType::Uint64,
    DataType::Acc64,
    DataType::Float32,
    DataType::Float64,
];

const ORDERS: [(ByteOrder, &str); 4] = [
    (ByteOrder::Abcd, "ABCD"),
    (ByteOrder::Cdab, "CDAB"),
    (ByteOrder::Badc, "BADC"),
    (ByteOrder::Dcba, "DCBA"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_map_reads_every_type_order_scale_and_offset_into_the_store() {
    // Holding registers from 100: every type in every order, 2 registers of padding
    // between orders (the device's map has them, so requests may span them); scale and
    // offset on the CDAB ones.
    let mut image = Image::default();
    let mut points = String::new();
    let mut expected: Vec<(String, f64)> = Vec::new();
    let mut address = 100u16;
    for (order, order_name) in ORDERS {
        for data_type in TYPES {
            let (be, value) = sample(data_type);
            image.put_holding(address, &encode_bytes(&be, order));
            let (scale, offset) = if order == ByteOrder::Cdab {
                (0.5, -1.0)
            } else {
                (1.0, 0.0)
            };
            let column = format!("{data_type}_{}", order_name.to_lowercase());
            points.push_str(&format!(
                "[[devices.points]]\nregister = \"holding\"\naddress = {address}\ndata_type = \"{data_type}\"\nbyte_order = \"{order_name}\"\nscale = {scale:?}\noffset = {offset:?}\ncolumn = \"{column}\"\n"
            ));
            expected.push((column, value * scale + offset));
            address += data_type.registers() as u16;
        }
        image.put_holding(address, &[0, 0]);
        address += 2;
    }
    // The padding after the last order is not a point: no request reads it.
    let holding_end = address - 2;
    // SunSpec's "not implemented" values are readings on a plain device: uint16
    // 0xFFFF, int16 -32768, an acc32 counter at 0. A NaN float has no value.
    image.put_holding(2000, &[0xFFFF, 0x8000, 0, 0]);
    image.put_holding(
        2004,
        &encode_bytes(&f32::NAN.to_be_bytes(), ByteOrder::Abcd),
    );
    // An SDM630-style meter in input registers (float32): L1 voltage and power, and
    // a total import counter; the device reports power with the opposite sign.
    image.put_input(0, &[0; 80]);
    image.put_input(0, &encode_bytes(&230.1f32.to_be_bytes(), ByteOrder::Abcd));
    image.put_input(12, &encode_bytes(&1500f32.to_be_bytes(), ByteOrder::Abcd));
    image.put_input(
        72,
        &encode_bytes(&12_345.5f32.to_be_bytes(), ByteOrder::Abcd),
    );
    image.coils.insert(5, true);
    image.discrete.insert(3, false);
    let served = Served::with(1, image.clone());
    // A second unit behind the same gateway whose map has a hole between two points:
    // the request spanning it is refused, and the collector reads around it.
    let mut holey = Image::default();
    holey.put_holding(10, &[7]);
    holey.put_holding(20, &[8]);
    served.set(2, holey);
    let server = serve(&served, Framing::Tcp).await;
    let port = server.addr.port();
    let text = format!(
        r#"
        interval = "200ms"
        [[devices]]
        device_id = "plc-1"
        site_id = "site-a"
        host = "127.0.0.1"
        port = {port}
        invert_power = true
        table = "plc"
        {points}
        [[devices.points]]
        register = "holding"
        address = 2000
        data_type = "uint16"
        column = "max_u16"
        [[devices.points]]
        register = "holding"
        address = 2001
        data_type = "int16"
        column = "min_i16"
        [[devices.points]]
        register = "holding"
        address = 2002
        data_type = "acc32"
        column = "counter"
        [[devices.points]]
        register = "holding"
        address = 2004
        data_type = "float32"
        column = "nan"
        [[devices.points]]
        register = "input"
        address = 0
        data_type = "float32"
        column = "voltage_v"
        table = "meter"
        phase = "L1"
        [[devices.points]]
        register = "input"
        address = 12
        data_type = "float32"
        column = "power_w"
        table = "meter"
        phase = "L1"
        [[devices.points]]
        register = "input"
        address = 72
        data_type = "float32"
        scale = 1000.0
        column = "energy_import_wh"
        table = "meter"
        [[devices.points]]
        register = "coil"
        address = 5
        column = "relay_on"
        [[devices.points]]
        register = "discrete"
        address = 3
        column = "door_open"

        [[devices]]
        device_id = "holey-1"
        host = "127.0.0.1"
        port = {port}
        unit_id = 2
        table = "plc"
        [[devices.points]]
        register = "holding"
        address = 10
        data_type = "int16"
        column = "a"
        [[devices.points]]
        register = "holding"
        address = 20
        data_type = "int16"
        column = "b"
        "#
    );
    let (_dir, store) = open_store();
    let metrics = ModbusMetrics::default();
    let collector =
        ModbusCollector::start(&config(&text), store.clone(), metrics.clone(), None).unwrap();

    let plc = eventually("plc-1's row", || rows_of(&store, "plc", "plc-1").pop()).await;
    for (column, value) in &expected {
        let got = number(&plc, column);
        assert!(
            (got - value).abs() <= value.abs() * 1e-12,
            "{column}: {got} != {value}"
        );
    }
    assert_eq!(number(&plc, "max_u16"), 65535.0, "0xFFFF is a reading");
    assert_eq!(number(&plc, "min_i16"), -32768.0, "-32768 is a reading");
    assert_eq!(number(&plc, "counter"), 0.0, "a counter at 0 is a reading");
    assert_eq!(plc.get("nan"), None, "NaN has no value");
    assert_eq!(plc["relay_on"], "true");
    assert_eq!(plc["door_open"], "false");
    assert_eq!(plc["site_id"], "site-a");
    // Not a canonical table: no provenance columns.
    assert_eq!(plc.get("source"), None);
    let time: i64 = plc["time"].parse().unwrap();
    assert_eq!(time % 1_000_000, 0, "times are whole milliseconds");

    let meter = eventually("plc-1's meter rows", || {
        let rows = rows_of(&store, "meter", "plc-1");
        (rows.iter().any(|r| r.contains_key("phase"))
            && rows.iter().any(|r| !r.contains_key("phase")))
        .then_some(rows)
    })
    .await;
    let l1 = meter
        .iter()
        .find(|r| r.get("phase").map(String::as_str) == Some("L1"))
        .unwrap();
    assert_eq!(number(l1, "voltage_v"), f64::from(230.1f32));
    assert_eq!(number(l1, "power_w"), -1500.0, "invert_power");
    assert_eq!(
        (l1["source"].as_str(), l1["quality"].as_str()),
        ("modbus", "actual")
    );
    let total = meter.iter().find(|r| !r.contains_key("phase")).unwrap();
    assert_eq!(number(total, "energy_import_wh"), 12_345_500.0);

    let holey = eventually("holey-1's row", || rows_of(&store, "plc", "holey-1").pop()).await;
    assert_eq!((number(&holey, "a"), number(&holey, "b")), (7.0, 8.0));

    let status = eventually("plc-1 online", || {
        rows_of(&store, "device_status", "plc-1").pop()
    })
    .await;
    assert_eq!(status["online"], "true");
    assert_eq!(
        status["reason"],
        format!("polling {} points", expected.len() + 9)
    );

    // Coalescing: one cycle of plc-1 reads the holding block in one request, the
    // values at 2000 in another, the input registers in one (gaps of 10 and 58 registers:
    // the second too large), coils and discrete inputs in one each.
    eventually("two cycles of plc-1", || {
        (snapshot(&collector, "plc-1").polls_ok >= 2).then_some(())
    })
    .await;
    let mut distinct: Vec<String> = served
        .requests_of(1)
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    distinct.sort();
    distinct.dedup();
    assert!(holding_end - 100 <= 125);
    assert_eq!(
        distinct,
        vec![
            "ReadCoils(5, 1)".to_string(),
            "ReadDiscreteInputs(3, 1)".to_string(),
            format!("ReadHoldingRegisters(100, {})", holding_end - 100),
            "ReadHoldingRegisters(2000, 6)".to_string(),
            "ReadInputRegisters(0, 14)".to_string(),
            "ReadInputRegisters(72, 2)".to_string(),
        ]
    );
    // The holey unit: the spanning request was refused once, then each point is read
    // on its own.
    let holey_requests: Vec<String> = served
        .requests_of(2)
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(holey_requests[0], "ReadHoldingRegisters(10, 11)");
    assert!(
        holey_requests[1..]
            .iter()
            .all(|r| r == "ReadHoldingRegisters(10, 1)" || r == "ReadHoldingRegisters(20, 1)"),
        "{holey_requests:?}"
    );
    // Both devices share one connection, kept across cycles.
    assert_eq!(served.connections.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.devices_count("online"), 2);

    collector.shutdown().await;
    server.task.abort();
    store.shutdown().unwrap();
}

/// A common model (1) block.
fn common(manufacturer: &str, model: &str, serial: &str) -> Vec<u16> {
    let def = sunspec::model(1).unwrap();
    sunspec::encode(
        def,
        &[
            ("Mn", EncodeValue::Text(manufacturer)),
            ("Md", EncodeValue::Text(model)),
            ("SN", EncodeValue::Text(serial)),
            ("DA", EncodeValue::Number(1.0)),
        ],
    )
}

fn block(id: u16, values: &[(&str, EncodeValue<'_>)]) -> Vec<u16> {
    sunspec::encode(sunspec::model(id).unwrap(), values)
}

fn sunspec_image(base: u16, blocks: &[Vec<u16>]) -> Image {
    let mut image = Image::default();
    image.put_holding(base, &sunspec::image(blocks));
    image
}

fn inverter_block(watts: f64) -> Vec<u16> {
    use EncodeValue::{Number, Raw};
    block(
        103,
        &[
            ("W_SF", Number(-1.0)),
            ("W", Number(watts)),
            ("WH_SF", Number(0.0)),
            ("WH", Number(5_000_000.0)),
            ("DCW_SF", Number(0.0)),
            ("DCW", Number(1300.0)),
            ("Hz_SF", Number(-2.0)),
            ("Hz", Number(50.01)),
            ("St", Raw(4)),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunspec_devices_are_discovered_at_40000_50000_and_0() {
    use EncodeValue::{Number, Raw};
    // At 40000: a SolarEdge-style common model of 65 registers (the spec has 66),
    // an inverter and a model gridlake does not read, skipped by its length.
    let mut short_common = common("SolarEdge", "SE5000", "7E1234");
    short_common[1] = 65;
    short_common.pop();
    let mut unknown = vec![160, 30];
    unknown.extend([0u16; 30]);
    let inverter = sunspec_image(40000, &[short_common, inverter_block(1234.5), unknown]);
    // At 50000: a battery with models 124 and 802.
    let battery = sunspec_image(
        50000,
        &[
            common("gridlake", "sim-battery", "B-1"),
            block(
                124,
                &[
                    ("ChaState_SF", Number(-1.0)),
                    ("ChaState", Number(55.5)),
                    ("ChaSt", Raw(4)),
                ],
            ),
            block(
                802,
                &[
                    ("SoC_SF", Number(0.0)),
                    ("SoC", Number(56.0)),
                    ("SoH_SF", Number(0.0)),
                    ("SoH", Number(98.0)),
                    ("NCyc", Number(321.0)),
                    ("W_SF", Number(0.0)),
                    ("W", Number(-2000.0)),
                    ("ChaSt", Raw(4)),
                ],
            ),
        ],
    );
    // At 0: a three-phase meter whose phase currents are not implemented.
    let meter = sunspec_image(
        0,
        &[
            common("gridlake", "sim-meter", "M-1"),
            block(
                203,
                &[
                    ("W_SF", Number(0.0)),
                    ("W", Number(-500.0)),
                    ("WphA", Number(-100.0)),
                    ("WphB", Number(-200.0)),
                    ("WphC", Number(-200.0)),
                    ("V_SF", Number(-1.0)),
                    ("PhV", Number(230.1)),
                    ("PhVphA", Number(230.0)),
                    ("PhVphB", Number(231.0)),
                    ("PhVphC", Number(229.5)),
                    ("A_SF", Number(-1.0)),
                    ("A", Number(3.2)),
                    ("Hz_SF", Number(-2.0)),
                    ("Hz", Number(49.98)),
                    ("TotWh_SF", Number(0.0)),
                    ("TotWhImp", Number(123_456.0)),
                    ("TotWhExp", Number(6543.0)),
                ],
            ),
        ],
    );
    let servers = [
        serve(&Served::with(1, inverter), Framing::Tcp).await,
        serve(&Served::with(1, battery), Framing::Tcp).await,
        serve(&Served::with(1, meter), Framing::Tcp).await,
    ];
    let mut text = String::from("interval = \"200ms\"\n");
    for (name, server) in ["inv", "bat", "meter"].iter().zip(&servers) {
        text.push_str(&format!(
            "[[devices]]\ndevice_id = \"{name}\"\nsite_id = \"s1\"\nhost = \"127.0.0.1\"\nport = {}\n",
            server.addr.port()
        ));
    }
    let (_dir, store) = open_store();
    let collector = ModbusCollector::start(
        &config(&text),
        store.clone(),
        ModbusMetrics::default(),
        None,
    )
    .unwrap();

    let inv = eventually("the inverter's row", || {
        rows_of(&store, "inverter", "inv").pop()
    })
    .await;
    assert_eq!(number(&inv, "power_w"), 1234.5);
    assert_eq!(number(&inv, "energy_wh"), 5_000_000.0);
    assert_eq!(number(&inv, "dc_power_w"), 1300.0);
    assert_eq!(inv["status"], "mppt");
    assert_eq!(inv["source"], "modbus/sunspec");
    assert_eq!(inv["site_id"], "s1");

    let bat = eventually("the battery's row", || {
        rows_of(&store, "battery", "bat").pop()
    })
    .await;
    assert_eq!(number(&bat, "soc_pct"), 56.0, "802 wins over 124");
    assert_eq!(number(&bat, "health_pct"), 98.0);
    assert_eq!(bat["cycles"], "321");
    assert_eq!(number(&bat, "power_w"), -2000.0);
    assert_eq!(bat["state"], "charging");

    let meter = eventually("the meter's four rows", || {
        let rows = rows_of(&store, "meter", "meter");
        let phases: std::collections::BTreeSet<Option<String>> =
            rows.iter().map(|r| r.get("phase").cloned()).collect();
        (phases.len() == 4).then_some(rows)
    })
    .await;
    let total = meter.iter().find(|r| !r.contains_key("phase")).unwrap();
    assert_eq!(number(total, "power_w"), -500.0);
    assert_eq!(number(total, "voltage_v"), 230.1);
    assert_eq!(number(total, "current_a"), 3.2);
    assert_eq!(number(total, "frequency_hz"), 49.98);
    assert_eq!(number(total, "energy_import_wh"), 123_456.0);
    assert_eq!(number(total, "energy_export_wh"), 6543.0);
    let l2 = meter
        .iter()
        .find(|r| r.get("phase").map(String::as_str) == Some("L2"))
        .unwrap();
    assert_eq!(number(l2, "power_w"), -200.0);
    assert_eq!(number(l2, "voltage_v"), 231.0);
    assert_eq!(
        l2.get("current_a"),
        None,
        "not implemented is null, not zero"
    );

    let status = eventually("the inverter online", || {
        rows_of(&store, "device_status", "inv").pop()
    })
    .await;
    assert_eq!(status["online"], "true");
    assert_eq!(
        status["reason"],
        "SunSpec: SolarEdge SE5000 serial 7E1234; models 1, 103, 160"
    );

    let inv = snapshot(&collector, "inv");
    let info = inv.sunspec.unwrap();
    assert_eq!(info.base, 40000);
    assert_eq!(
        info.models,
        vec![
            ModelLocation {
                id: 1,
                address: 40002,
                len: 65
            },
            ModelLocation {
                id: 103,
                address: 40069,
                len: 50
            },
            ModelLocation {
                id: 160,
                address: 40121,
                len: 30
            },
        ]
    );
    assert_eq!(info.common.serial.as_deref(), Some("7E1234"));
    assert_eq!(snapshot(&collector, "bat").sunspec.unwrap().base, 50000);
    assert_eq!(snapshot(&collector, "meter").sunspec.unwrap().base, 0);

    collector.shutdown().await;
    for server in servers {
        server.task.abort();
    }
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sunspec_map_that_moves_is_discovered_again() {
    let served = Served::with(
        1,
        sunspec_image(40000, &[common("x", "y", "z"), inverter_block(100.0)]),
    );
    let server = serve(&served, Framing::Tcp).await;
    let text = format!(
        "interval = \"100ms\"\n[[devices]]\ndevice_id = \"inv\"\nhost = \"127.0.0.1\"\nport = {}\n",
        server.addr.port()
    );
    let (_dir, store) = open_store();
    let collector = ModbusCollector::start(
        &config(&text),
        store.clone(),
        ModbusMetrics::default(),
        None,
    )
    .unwrap();
    eventually("a first reading", || {
        rows_of(&store, "inverter", "inv").pop()
    })
    .await;

    // New firmware: a model before the inverter moves it by 12 registers.
    let mut extra = vec![307, 10];
    extra.extend([0u16; 10]);
    served.set(
        1,
        sunspec_image(
            40000,
            &[common("x", "y", "z"), extra, inverter_block(777.0)],
        ),
    );
    eventually("a reading from the moved model", || {
        rows_of(&store, "inverter", "inv")
            .into_iter()
            .any(|r| number(&r, "power_w") == 777.0)
            .then_some(())
    })
    .await;
    let inv = snapshot(&collector, "inv");
    let ids: Vec<u16> = inv.sunspec.unwrap().models.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 307, 103]);
    assert_eq!(inv.polls_failed, 0, "discovered again within the cycle");

    collector.shutdown().await;
    server.task.abort();
    store.shutdown().unwrap();
}

fn simple_image(value: u16) -> Image {
    let mut image = Image::default();
    image.put_holding(0, &[value]);
    image
}

fn simple_device(id: &str, addr: SocketAddr) -> String {
    format!(
        "[[devices]]\ndevice_id = \"{id}\"\nhost = \"127.0.0.1\"\nport = {}\ntable = \"plc\"\n[[devices.points]]\nregister = \"holding\"\naddress = 0\ndata_type = \"uint16\"\ncolumn = \"v\"\n",
        addr.port()
    )
}

fn statuses(store: &Store, device: &str) -> Vec<(String, String)> {
    let mut rows = rows_of(store, "device_status", device);
    rows.sort_by_key(|r| r["time"].parse::<i64>().unwrap());
    rows.into_iter()
        .map(|r| {
            (
                r["online"].clone(),
                r.get("reason").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_disappears_goes_offline_backs_off_and_returns_while_others_keep_polling() {
    let gone = Served::with(1, simple_image(1));
    let steady = Served::with(1, simple_image(2));
    let gone_server = serve(&gone, Framing::Tcp).await;
    let steady_server = serve(&steady, Framing::Tcp).await;
    // The gone device fails by refused connections, at once: nothing here waits for a
    // timeout, and a long one with a retry keeps a stall of the test machine from
    // failing the steady device.
    let text = format!(
        "interval = \"200ms\"\ntimeout = \"5s\"\nretries = 1\nbackoff_max = \"1s\"\n{}{}",
        simple_device("gone", gone_server.addr),
        simple_device("steady", steady_server.addr)
    );
    let (_dir, store) = open_store();
    let metrics = ModbusMetrics::default();
    let collector =
        ModbusCollector::start(&config(&text), store.clone(), metrics.clone(), None).unwrap();
    eventually("both online", || {
        let d = collector.devices();
        d.iter().all(|d| d.polls_ok >= 2).then_some(())
    })
    .await;

    // The server goes away with its connections.
    gone_server.task.abort();
    let _ = gone_server.task.await;
    eventually("gone offline in device_status", || {
        statuses(&store, "gone")
            .last()
            .is_some_and(|(online, _)| online == "false")
            .then_some(())
    })
    .await;
    let (_, reason) = statuses(&store, "gone").pop().unwrap();
    assert!(
        reason.contains("connect") || reason.contains("connection"),
        "{reason}"
    );

    // While it is gone, it is retried ever less often, and the other device keeps its
    // schedule: its cycles go on succeeding, few of them missed.
    let before = snapshot(&collector, "steady");
    let gone_now = eventually("gone backing off", || {
        let s = snapshot(&collector, "gone");
        (s.cycles_skipped >= 3 && s.polls_failed >= 2).then_some(s)
    })
    .await;
    assert_eq!(gone_now.online, Some(false));
    assert!(gone_now.last_error.is_some());
    let steady_now = eventually("steady polling on", || {
        let s = snapshot(&collector, "steady");
        (s.polls_ok >= before.polls_ok + 10).then_some(s)
    })
    .await;
    assert_eq!(steady_now.online, Some(true));
    let (ok, missed) = (
        steady_now.polls_ok - before.polls_ok,
        steady_now.cycles_missed - before.cycles_missed,
    );
    assert!(missed * 2 < ok, "{before:?} {steady_now:?}");
    assert!(
        statuses(&store, "steady")
            .iter()
            .all(|(online, _)| online == "true"),
        "steady never reported offline"
    );
    assert!(metrics.cycles("failed") >= 2);
    assert!(metrics.cycles("skipped") >= 3);
    assert_eq!(metrics.devices_count("offline"), 1);

    // It comes back on the same port: online again within the backoff cap.
    let back = serve_at(&gone, Framing::Tcp, gone_server.addr).await;
    eventually("gone online again", || {
        let s = statuses(&store, "gone");
        (s.len() == 3 && s[2].0 == "true").then_some(())
    })
    .await;
    assert_eq!(statuses(&store, "gone")[0].0, "true");
    assert_eq!(metrics.devices_count("online"), 2);
    assert_eq!(metrics.devices_count("offline"), 0);

    collector.shutdown().await;
    back.task.abort();
    steady_server.task.abort();
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_answers_delays_only_its_own_endpoint() {
    let (silent, silent_task) = black_hole().await;
    let steady = Served::with(1, simple_image(2));
    let steady_server = serve(&steady, Framing::Tcp).await;
    // The silent device times out after 1 s per try, ten of the other's intervals.
    let text = format!(
        "interval = \"100ms\"\ntimeout = \"1s\"\nretries = 1\n{}{}",
        simple_device("silent", silent),
        simple_device("steady", steady_server.addr)
    );
    let (_dir, store) = open_store();
    let metrics = ModbusMetrics::default();
    let collector =
        ModbusCollector::start(&config(&text), store.clone(), metrics.clone(), None).unwrap();
    let silent_now = eventually("silent failed twice", || {
        let s = snapshot(&collector, "silent");
        (s.polls_failed >= 2).then_some(s)
    })
    .await;
    assert_eq!(
        silent_now.last_error.as_deref(),
        Some("reading holding 0: no answer within the timeout")
    );
    let steady_now = eventually("steady polled 30 times", || {
        let s = snapshot(&collector, "steady");
        (s.polls_ok >= 30).then_some(s)
    })
    .await;
    // Polled one after the other, the steady device would miss about nine cycles
    // in ten.
    assert!(
        steady_now.cycles_missed * 2 < steady_now.polls_ok,
        "{steady_now:?}"
    );
    assert!(metrics.request("timeout").get() >= 4, "a timeout per try");
    let (online, reason) = statuses(&store, "silent").pop().unwrap();
    assert_eq!(
        (online.as_str(), reason.as_str()),
        ("false", "reading holding 0: no answer within the timeout")
    );

    collector.shutdown().await;
    silent_task.abort();
    steady_server.task.abort();
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_devices_share_one_gateway_connection() {
    let served = Served::with(3, simple_image(33));
    served.set(4, simple_image(44));
    let server = serve(&served, Framing::RtuOverTcp).await;
    let port = server.addr.port();
    let mut text = String::from("interval = \"100ms\"\n");
    for unit in [3, 4] {
        text.push_str(&format!(
            "[[devices]]\ndevice_id = \"rtu-{unit}\"\nhost = \"127.0.0.1\"\nport = {port}\nunit_id = {unit}\nframing = \"rtu_over_tcp\"\ntable = \"plc\"\n[[devices.points]]\nregister = \"holding\"\naddress = 0\ndata_type = \"uint16\"\ncolumn = \"v\"\n"
        ));
    }
    let (_dir, store) = open_store();
    let collector = ModbusCollector::start(
        &config(&text),
        store.clone(),
        ModbusMetrics::default(),
        None,
    )
    .unwrap();
    for (unit, value) in [(3, 33.0), (4, 44.0)] {
        let row = eventually("an RTU reading", || {
            rows_of(&store, "plc", &format!("rtu-{unit}")).pop()
        })
        .await;
        assert_eq!(number(&row, "v"), value);
    }
    eventually("several cycles each", || {
        collector
            .devices()
            .iter()
            .all(|d| d.polls_ok >= 5)
            .then_some(())
    })
    .await;
    assert_eq!(served.connections.load(Ordering::SeqCst), 1);
    assert!(collector.devices().iter().all(|d| d.polls_failed == 0));

    collector.shutdown().await;
    server.task.abort();
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_the_last_batch() {
    let served = Served::with(1, simple_image(5));
    let server = serve(&served, Framing::Tcp).await;
    // Batches that would wait an hour: only shutdown writes them.
    let text = format!(
        "interval = \"100ms\"\nbatch_rows = 1000000\n{}",
        simple_device("d", server.addr)
    );
    let mut config = config(&text);
    config.batch_linger = Duration::from_secs(3600);
    let (_dir, store) = open_store();
    let metrics = ModbusMetrics::default();
    let collector = ModbusCollector::start(&config, store.clone(), metrics.clone(), None).unwrap();
    eventually("three cycles", || {
        (snapshot(&collector, "d").polls_ok >= 3).then_some(())
    })
    .await;
    assert!(rows(&store, "plc").is_empty());
    collector.shutdown().await;
    let polled = rows_of(&store, "plc", "d").len();
    assert!(polled >= 3, "{polled}");
    assert_eq!(statuses(&store, "d").len(), 1);
    assert_eq!(metrics.readings.get(), polled as u64 + 1);
    server.task.abort();
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_read_as_sunspec_and_by_a_register_map_gives_one_row_per_point() {
    // An inverter whose SunSpec model lacks what a register map adds (a fan speed),
    // and whose power the map reads from a better register; and a value for another
    // table.
    let mut image = sunspec_image(40000, &[common("x", "y", "z"), inverter_block(1234.5)]);
    image.put_holding(100, &encode_bytes(&999f32.to_be_bytes(), ByteOrder::Abcd));
    image.put_holding(102, &[1200, 42]);
    let served = Served::with(1, image);
    let server = serve(&served, Framing::Tcp).await;
    let text = format!(
        r#"
        interval = "100ms"
        [[devices]]
        device_id = "hybrid"
        host = "127.0.0.1"
        port = {}
        sunspec = true
        table = "inverter"
        [[devices.points]]
        register = "holding"
        address = 100
        data_type = "float32"
        column = "power_w"
        [[devices.points]]
        register = "holding"
        address = 102
        data_type = "uint16"
        column = "fan_rpm"
        [[devices.points]]
        register = "holding"
        address = 103
        data_type = "uint16"
        column = "temp"
        table = "plc"
        "#,
        server.addr.port()
    );
    let (_dir, store) = open_store();
    let collector = ModbusCollector::start(
        &config(&text),
        store.clone(),
        ModbusMetrics::default(),
        None,
    )
    .unwrap();
    eventually("five cycles", || {
        (snapshot(&collector, "hybrid").polls_ok >= 5).then_some(())
    })
    .await;
    collector.shutdown().await;

    let inverter = rows_of(&store, "inverter", "hybrid");
    assert!(inverter.len() >= 5, "{inverter:?}");
    for row in &inverter {
        assert_eq!(
            number(row, "power_w"),
            999.0,
            "the map's value wins: {row:?}"
        );
        assert_eq!(number(row, "energy_wh"), 5_000_000.0, "{row:?}");
        assert_eq!(row["status"], "mppt");
        assert_eq!(number(row, "fan_rpm"), 1200.0, "{row:?}");
        assert_eq!(row["source"], "modbus/sunspec");
    }
    // One time per cycle for every row of the device: each cycle's plc row has its
    // inverter row's time.
    let times = |rows: &[BTreeMap<String, String>]| -> std::collections::BTreeSet<String> {
        rows.iter().map(|r| r["time"].clone()).collect()
    };
    let plc = rows_of(&store, "plc", "hybrid");
    assert_eq!(times(&inverter).len(), inverter.len());
    assert_eq!(times(&inverter), times(&plc));
    assert!(plc.iter().all(|r| number(r, "temp") == 42.0));

    server.task.abort();
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunspec_discovery_of_a_unit_that_never_answers_costs_one_base() {
    // Unit 9 is absent behind the gateway: no answer at any address. Unit 1 answers.
    let served = Served::with(1, simple_image(2));
    let server = serve(&served, Framing::Tcp).await;
    let text = format!(
        "interval = \"1s\"\ntimeout = \"300ms\"\nretries = 1\nbackoff_max = \"1s\"\n[[devices]]\ndevice_id = \"absent\"\nhost = \"127.0.0.1\"\nport = {}\nunit_id = 9\n{}",
        server.addr.port(),
        simple_device("steady", server.addr)
    );
    let (_dir, store) = open_store();
    let collector = ModbusCollector::start(
        &config(&text),
        store.clone(),
        ModbusMetrics::default(),
        None,
    )
    .unwrap();
    let absent = eventually("the absent unit failed twice", || {
        let s = snapshot(&collector, "absent");
        (s.polls_failed >= 2).then_some(s)
    })
    .await;
    assert_eq!(
        absent.last_error.as_deref(),
        Some("looking for the SunSpec marker at 40000: no answer within the timeout")
    );
    // Each failed cycle tried the first base (once and once more), never 50000 and 0:
    // three bases would cost the other unit 1.8 s of every second.
    let requests = served.requests_of(9);
    assert!(
        requests
            .iter()
            .all(|r| *r == Request::ReadHoldingRegisters(40000, 2)),
        "{requests:?}"
    );
    let steady = eventually("steady polled 5 times", || {
        let s = snapshot(&collector, "steady");
        (s.polls_ok >= 5).then_some(s)
    })
    .await;
    assert!(steady.cycles_missed * 2 < steady.polls_ok, "{steady:?}");

    collector.shutdown().await;
    server.task.abort();
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_gateway_closed_while_idle_is_reopened_without_a_retry() {
    let served = Served {
        close_after_answer: true,
        ..Served::with(1, simple_image(7))
    };
    let server = serve(&served, Framing::Tcp).await;
    // No retries: the first request of every cycle finds the connection closed.
    let text = format!(
        "interval = \"100ms\"\ntimeout = \"5s\"\nretries = 0\n{}",
        simple_device("d", server.addr)
    );
    let (_dir, store) = open_store();
    let metrics = ModbusMetrics::default();
    let collector =
        ModbusCollector::start(&config(&text), store.clone(), metrics.clone(), None).unwrap();
    let d = eventually("five cycles", || {
        let s = snapshot(&collector, "d");
        (s.polls_ok >= 5).then_some(s)
    })
    .await;
    assert_eq!((d.polls_failed, d.online), (0, Some(true)), "{d:?}");
    assert!(served.connections.load(Ordering::SeqCst) >= 5);
    assert!(
        metrics.request("io").get() >= 4,
        "the closed connections were used"
    );
    assert_eq!(statuses(&store, "d").len(), 1);

    collector.shutdown().await;
    server.task.abort();
    store.shutdown().unwrap();
}

/// Modbus RTU's CRC, sent low byte first.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0xFFFF, |crc, &b| {
        (0..8).fold(crc ^ u16::from(b), |crc, _| {
            if crc & 1 == 0 {
                crc >> 1
            } else {
                (crc >> 1) ^ 0xA001
            }
        })
    })
}

/// A serial-to-Ethernet converter (RTU framing over TCP) in front of a device that is
/// slow once: the first read of holding registers is answered after `late` with
/// `stale`, on the socket open then or, if none is, the next one to open (converters
/// buffer what the serial line receives); every later one at once with `value`.
#[derive(Debug)]
struct LateGateway {
    addr: SocketAddr,
    task: JoinHandle<()>,
    /// Set when the late answer went out.
    delivered: Arc<std::sync::atomic::AtomicBool>,
}

/// The converter's serial line: the socket it answers on, and answers kept for the
/// next one.
#[derive(Debug, Default)]
struct Line {
    socket: Option<(usize, tokio::net::tcp::OwnedWriteHalf)>,
    pending: Vec<u8>,
}

impl Line {
    async fn send(&mut self, frame: &[u8]) {
        match &mut self.socket {
            Some((_, socket)) => {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(frame).await;
            }
            None => self.pending.extend_from_slice(frame),
        }
    }
}

async fn late_gateway(late: Duration, stale: u16, value: u16) -> LateGateway {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let delivered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let line = Arc::new(tokio::sync::Mutex::new(Line::default()));
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let answer = |unit: u8, count: u16, v: u16| {
        let mut frame = vec![unit, 3, (count * 2) as u8];
        for _ in 0..count {
            frame.extend(v.to_be_bytes());
        }
        frame.extend(crc16(&frame).to_le_bytes());
        frame
    };
    let task = {
        let delivered = Arc::clone(&delivered);
        tokio::spawn(async move {
            let mut id = 0;
            while let Ok((stream, _)) = listener.accept().await {
                id += 1;
                let (mut reader, writer) = stream.into_split();
                {
                    let mut line = line.lock().await;
                    line.socket = Some((id, writer));
                    let pending = std::mem::take(&mut line.pending);
                    if !pending.is_empty() {
                        line.send(&pending).await;
                        delivered.store(true, Ordering::SeqCst);
                    }
                }
                let (line, first, delivered) = (
                    Arc::clone(&line),
                    Arc::clone(&first),
                    Arc::clone(&delivered),
                );
                tokio::spawn(async move {
                    let mut request = [0u8; 8];
                    while reader.read_exact(&mut request).await.is_ok() {
                        let unit = request[0];
                        let count = u16::from_be_bytes([request[4], request[5]]);
                        if request[1] != 3 {
                            continue;
                        }
                        if first.swap(false, Ordering::SeqCst) {
                            let (line, delivered) = (Arc::clone(&line), Arc::clone(&delivered));
                            let frame = answer(unit, count, stale);
                            tokio::spawn(async move {
                                tokio::time::sleep(late).await;
                                let mut line = line.lock().await;
                                let connected = line.socket.is_some();
                                line.send(&frame).await;
                                delivered.store(connected, Ordering::SeqCst);
                            });
                        } else {
                            line.lock().await.send(&answer(unit, count, value)).await;
                        }
                    }
                    // The client closed the socket: later answers wait for the next.
                    let mut line = line.lock().await;
                    if line.socket.as_ref().is_some_and(|(s, _)| *s == id) {
                        line.socket = None;
                    }
                });
            }
        })
    };
    LateGateway {
        addr,
        task,
        delivered,
    }
}

/// Polls an RTU device whose first answer comes 1.5 timeouts late, with `retries`,
/// and checks that no row holds the late answer's value.
async fn late_rtu_answer(retries: u32) {
    let gateway = late_gateway(Duration::from_millis(1500), 111, 222).await;
    let text = format!(
        "interval = \"2s\"\ntimeout = \"1s\"\nretries = {retries}\nbackoff_max = \"2s\"\n[[devices]]\ndevice_id = \"rtu\"\nhost = \"127.0.0.1\"\nport = {}\nframing = \"rtu_over_tcp\"\ntable = \"plc\"\n[[devices.points]]\nregister = \"holding\"\naddress = 0\ndata_type = \"uint16\"\ncolumn = \"v\"\n",
        gateway.addr.port()
    );
    let (_dir, store) = open_store();
    let collector = ModbusCollector::start(
        &config(&text),
        store.clone(),
        ModbusMetrics::default(),
        None,
    )
    .unwrap();
    // The second successful cycle is the first after the late answer in both cases.
    eventually("the late answer delivered and two good cycles", || {
        let s = snapshot(&collector, "rtu");
        (gateway.delivered.load(Ordering::SeqCst) && s.polls_ok >= 2).then_some(())
    })
    .await;
    collector.shutdown().await;
    let values: Vec<f64> = rows_of(&store, "plc", "rtu")
        .iter()
        .map(|r| number(r, "v"))
        .collect();
    assert!(values.len() >= 2, "{values:?}");
    assert!(values.iter().all(|&v| v == 222.0), "{values:?}");
    gateway.task.abort();
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_rtu_answer_on_the_reopened_socket_is_discarded() {
    // The cycle fails; the answer arrives while no socket is open and comes on the
    // socket of the next cycle, before its request.
    late_rtu_answer(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_rtu_answer_after_the_retry_is_not_taken_for_the_next_cycle() {
    // The retry succeeds on a new socket; the late answer comes after it, and waits
    // in the socket for the next cycle's request.
    late_rtu_answer(1).await;
}

/// Refuses the rows of one device, as a registry in `reject` mode does, and records
/// the devices of the rows it is told were stored.
#[derive(Debug)]
struct RefuseDevice(&'static str, Mutex<Vec<String>>);

impl RefuseDevice {
    fn new(device_id: &'static str) -> Self {
        Self(device_id, Mutex::default())
    }
}

impl crate::gate::DeviceGate for RefuseDevice {
    fn check(
        &self,
        lines: &mut Vec<storage::ParsedLine>,
        rejected: &mut Vec<storage::LineError>,
        site: Option<i64>,
    ) {
        assert_eq!(site, None, "the collector is not confined to a site");
        lines.retain(|line| {
            let refused = crate::gate::device_id(&line.row) == Some(self.0);
            if refused {
                rejected.push(storage::LineError::new(
                    line.line,
                    format!("device {:?} is not in the device registry", self.0),
                ));
            }
            !refused
        });
    }

    fn note_stored(&self, batch: &storage::WriteBatch, site: Option<i64>) {
        assert_eq!(site, None, "the collector is not confined to a site");
        let mut noted = self.1.lock().unwrap();
        for table in &batch.tables {
            noted.extend(
                table
                    .rows
                    .iter()
                    .filter_map(crate::gate::device_id)
                    .map(str::to_owned),
            );
        }
    }
}

/// A polled row of `plc` for `device` with one field.
fn plc_row(device: &str, value: storage::FieldValue) -> storage::ParsedLine {
    storage::ParsedLine {
        line: 0,
        table: "plc".to_owned(),
        row: storage::Row {
            time: 1_700_000_000_000_000_000,
            tags: vec![("device_id".to_owned(), device.to_owned())],
            fields: vec![("x".to_owned(), value)],
        },
    }
}

#[tokio::test]
async fn only_rows_the_store_takes_are_noted_with_the_gate() {
    let (_dir, store) = open_store();
    let gate = Arc::new(RefuseDevice::new("stranger"));
    let metrics = ModbusMetrics::default();
    let mut sink = sink::Sink {
        store: store.clone(),
        gate: Some(gate.clone()),
        metrics: metrics.clone(),
        batch_rows: 100,
        linger: Duration::from_millis(10),
        warned: None,
        warned_gate: None,
    };
    // `typo` passes the gate but not the store (text where `x` is a number).
    let ready = sink.prepare(vec![
        plc_row("known", storage::FieldValue::F64(1.0)),
        plc_row("stranger", storage::FieldValue::F64(2.0)),
        plc_row("typo", storage::FieldValue::String("two".to_owned())),
    ]);
    assert!(ready.is_some(), "the known device's row is written");
    assert_eq!(*gate.1.lock().unwrap(), ["known"]);
    assert_eq!(metrics.invalid_rows.get(), 2, "one refused by each");
    store.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_gate_refuses_are_counted_not_stored() {
    let known = Served::with(1, simple_image(1));
    let stranger = Served::with(1, simple_image(2));
    let known_server = serve(&known, Framing::Tcp).await;
    let stranger_server = serve(&stranger, Framing::Tcp).await;
    let text = format!(
        "interval = \"100ms\"\n{}{}",
        simple_device("known", known_server.addr),
        simple_device("stranger", stranger_server.addr)
    );
    let (_dir, store) = open_store();
    let metrics = ModbusMetrics::default();
    let gate: Arc<dyn crate::gate::DeviceGate> = Arc::new(RefuseDevice::new("stranger"));
    let collector =
        ModbusCollector::start(&config(&text), store.clone(), metrics.clone(), Some(gate)).unwrap();
    eventually("three stored readings of the known device", || {
        (rows_of(&store, "plc", "known").len() >= 3).then_some(())
    })
    .await;
    // Its online status and three polls, at least.
    eventually("the stranger's rows counted", || {
        (metrics.invalid_rows.get() >= 4).then_some(())
    })
    .await;
    collector.shutdown().await;

    assert!(rows_of(&store, "plc", "stranger").is_empty());
    assert!(statuses(&store, "stranger").is_empty());
    // Every stored row is the known device's.
    let stored = rows_of(&store, "plc", "known").len() + statuses(&store, "known").len();
    assert_eq!(metrics.readings.get(), stored as u64);
    known_server.task.abort();
    stranger_server.task.abort();
    store.shutdown().unwrap();
}
