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
use devices::modbus::{ByteOrder, DataType};
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

/// How a device in `order` lays out the big-endian bytes of a value.
fn words(be: &[u8], order: ByteOrder) -> Vec<u16> {
    let words: Vec<u16> = be
        .chunks(2)
        .map(|c| match order {
            ByteOrder::Abcd | ByteOrder::Cdab => u16::from_be_bytes([c[0], c[1]]),
            ByteOrder::Badc | ByteOrder::Dcba => u16::from_le_bytes([c[0], c[1]]),
        })
        .collect();
    match order {
        ByteOrder::Abcd | ByteOrder::Badc => words,
        ByteOrder::Cdab | ByteOrder::Dcba => words.into_iter().rev().collect(),
    }
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
            image.put_holding(address, &words(&be, order));
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
    // A sentinel (uint16 0xFFFF): no value, not a zero.
    image.put_holding(2000, &[0xFFFF]);
    // An SDM630-style meter in input registers (float32): L1 voltage and power, and
    // a total import counter; the device reports power with the opposite sign.
    image.put_input(0, &[0; 80]);
    image.put_input(0, &words(&230.1f32.to_be_bytes(), ByteOrder::Abcd));
    image.put_input(12, &words(&1500f32.to_be_bytes(), ByteOrder::Abcd));
    image.put_input(72, &words(&12_345.5f32.to_be_bytes(), ByteOrder::Abcd));
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
        column = "sentinel"
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
    let collector = ModbusCollector::start(&config(&text), store.clone(), metrics.clone()).unwrap();

    let plc = eventually("plc-1's row", || rows_of(&store, "plc", "plc-1").pop()).await;
    for (column, value) in &expected {
        let got = number(&plc, column);
        assert!(
            (got - value).abs() <= value.abs() * 1e-12,
            "{column}: {got} != {value}"
        );
    }
    assert_eq!(plc.get("sentinel"), None, "a sentinel is a null");
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
        format!("polling {} points", expected.len() + 6)
    );

    // Coalescing: one cycle of plc-1 reads the holding block in one request, the
    // sentinel in another, the input registers in one (gaps of 10 and 58 registers:
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
            "ReadHoldingRegisters(2000, 1)".to_string(),
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
    let collector =
        ModbusCollector::start(&config(&text), store.clone(), ModbusMetrics::default()).unwrap();

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
    let collector =
        ModbusCollector::start(&config(&text), store.clone(), ModbusMetrics::default()).unwrap();
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
    let text = format!(
        "interval = \"200ms\"\ntimeout = \"500ms\"\nretries = 0\nbackoff_max = \"1s\"\n{}{}",
        simple_device("gone", gone_server.addr),
        simple_device("steady", steady_server.addr)
    );
    let (_dir, store) = open_store();
    let metrics = ModbusMetrics::default();
    let collector = ModbusCollector::start(&config(&text), store.clone(), metrics.clone()).unwrap();
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
    // schedule.
    let before = snapshot(&collector, "steady").polls_ok;
    let gone_now = eventually("gone backing off", || {
        let s = snapshot(&collector, "gone");
        (s.cycles_skipped >= 3 && s.polls_failed >= 2).then_some(s)
    })
    .await;
    assert_eq!(gone_now.online, Some(false));
    assert!(gone_now.last_error.is_some());
    let steady_now = eventually("steady polling on", || {
        let s = snapshot(&collector, "steady");
        (s.polls_ok >= before + 10).then_some(s)
    })
    .await;
    assert_eq!(steady_now.polls_failed, 0);
    assert_eq!(steady_now.online, Some(true));
    assert!(
        steady_now.cycles_missed * 2 < steady_now.polls_ok,
        "{steady_now:?}"
    );
    assert_eq!(
        statuses(&store, "steady").len(),
        1,
        "no transitions for steady"
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
    let collector = ModbusCollector::start(&config(&text), store.clone(), metrics.clone()).unwrap();
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
    let collector =
        ModbusCollector::start(&config(&text), store.clone(), ModbusMetrics::default()).unwrap();
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
    let collector = ModbusCollector::start(&config, store.clone(), metrics.clone()).unwrap();
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
