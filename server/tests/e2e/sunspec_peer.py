#!/usr/bin/env python3
"""A SunSpec device built by a second implementation, for gridlake's end-to-end tests.

The register image is encoded by pysunspec2 (the SunSpec Alliance's reference library)
and served by pymodbus, so gridlake's discovery and decoding are checked against code
that shares nothing with its own encoder (devices::sunspec::encode) or simulator.

The device carries the common model (1), a three-phase inverter (103), a three-phase
wye meter (203) and a battery (802), one after another from the base address (40000 by
default), ended by the end marker. Values go in through pysunspec2's scaled setter
(`cvalue`) with a scale factor per point; a few points are left unimplemented (they hold
SunSpec's "not implemented" value and must come out of gridlake as nulls).

Prints one JSON line to stdout, then serves until killed:

    {"port": P, "unit_id": 1, "base": 40000,
     "models": {"103": {"W": 1234.5, "DCW": null, ...}, ...},
     "symbols": {"103": {"St": "MPPT"}, ...}}

`models` holds, for every point this script sets or deliberately leaves unimplemented,
the value pysunspec2 decodes from the served bytes (`cvalue`: scaled, None when not
implemented). `symbols` names the enum values.

Needs pymodbus 3.16+ (SimData/SimDevice datastore) and pysunspec2 1.3.
"""

import argparse
import asyncio
import json
import sys

import sunspec2.device as ss_device
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# "SunS", the marker that starts a SunSpec register map.
SUNS = [0x5375, 0x6E53]
# The end marker: model id 0xFFFF with length 0.
END = [0xFFFF, 0x0000]

# Per model: the fixed length L (spec) and the points to set, in engineering units for
# scaled points ("cvalue") or raw for the rest. Scale factors come first so the scaled
# setter can use them. Points listed with None stay unimplemented on purpose.
MODELS = [
    (
        1,
        66,
        [
            ("Mn", "pysunspec2"),
            ("Md", "gridlake-peer"),
            ("Vr", "1.3.7"),
            ("SN", "PEER-0001"),
            ("DA", 1),
        ],
    ),
    (
        103,
        50,
        [
            ("A_SF", -2),
            ("V_SF", -1),
            ("W_SF", -1),
            ("Hz_SF", -2),
            ("WH_SF", 0),
            ("A", 17.83),
            ("AphA", 5.94),
            ("AphB", 5.95),
            ("AphC", 5.94),
            ("PhVphA", 230.4),
            ("PhVphB", 231.1),
            ("PhVphC", 229.8),
            ("W", 3123.4),
            ("Hz", 50.02),
            ("WH", 12345678),
            ("St", 4),  # MPPT
            # DC power and its scale factor are not implemented by this "device".
            ("DCW", None),
            ("DCW_SF", None),
        ],
    ),
    (
        203,
        105,
        [
            ("A_SF", -2),
            ("V_SF", -1),
            ("Hz_SF", -2),
            ("W_SF", 0),
            # Energy in tens of Wh: a positive scale factor.
            ("TotWh_SF", 1),
            ("A", 12.5),
            ("AphA", 4.25),
            ("AphB", 4.0),
            ("AphC", 4.25),
            ("PhV", 230.1),
            ("PhVphA", 229.9),
            ("PhVphB", 230.3),
            ("PhVphC", 230.1),
            ("Hz", 49.98),
            ("W", -1530),  # exporting
            ("WphA", -520),
            ("WphB", -490),
            # Phase C power is not implemented: the L3 row has voltage and current only.
            ("WphC", None),
            ("TotWhImp", 8765430),
            ("TotWhExp", 2345670),
        ],
    ),
    (
        802,
        62,
        [
            ("SoC_SF", -1),
            ("W_SF", 0),
            ("SoC", 63.7),
            ("NCyc", 412),
            ("W", -2500),
            ("ChaSt", 3),  # DISCHARGING
            # State of health is not implemented.
            ("SoH", None),
            ("SoH_SF", None),
        ],
    ),
]


def build_model(model_id, length, points):
    """Encodes one model with pysunspec2; returns (registers, decoded values, symbols)."""
    model = ss_device.Model(model_id=model_id, model_len=length)
    model.ID.value = model_id
    model.L.value = length
    for name, value in points:
        point = model.points[name]
        if value is None:
            continue
        if point.sf_required and not isinstance(value, str):
            point.cvalue = value
        else:
            point.value = value
    data = model.get_mb()
    if len(data) != 2 * (length + 2):
        raise SystemExit(f"model {model_id}: encoded {len(data)} bytes, expected {2 * (length + 2)}")
    registers = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]

    # Decode the same bytes the way a SunSpec client would: these are the expected values.
    decoded = ss_device.Model(model_id=model_id, model_len=length, data=data)
    if decoded.error_info:
        raise SystemExit(f"model {model_id}: pysunspec2 cannot decode its own encoding: {decoded.error_info}")
    values = {}
    symbols = {}
    for name, _ in points:
        point = decoded.points[name]
        values[name] = point.cvalue
        for symbol in point.pdef.get("symbols") or []:
            if symbol["value"] == point.value:
                symbols[name] = symbol["name"]
    return registers, values, symbols


def build_image():
    registers = list(SUNS)
    models = {}
    symbols = {}
    for model_id, length, points in MODELS:
        regs, values, syms = build_model(model_id, length, points)
        registers.extend(regs)
        models[str(model_id)] = values
        if syms:
            symbols[str(model_id)] = syms
    registers.extend(END)
    return registers, models, symbols


async def serve(args):
    registers, models, symbols = build_image()
    # One shared block: function codes 3 (holding) and 4 (input) read the same
    # registers, as SunSpec devices answer both. Reads outside the block get exception 2
    # (illegal data address).
    device = SimDevice(
        id=args.unit_id,
        simdata=[SimData(address=args.base, values=registers, datatype=DataType.REGISTERS)],
    )
    server = ModbusTcpServer(device, address=(args.host, args.port))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(
        json.dumps(
            {"port": port, "unit_id": args.unit_id, "base": args.base, "models": models, "symbols": symbols}
        ),
        flush=True,
    )
    await server.serving


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--unit-id", type=int, default=1)
    parser.add_argument("--base", type=int, default=40000, help="address of the SunS marker")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
