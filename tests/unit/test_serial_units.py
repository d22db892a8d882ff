"""Serial passthrough pieces without a device: rules, the by-id scan with a made-up
sysfs, the netmon line, the bridge's handling of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common import netmon_proto
from services.executor.errors import InvalidRequest
from services.executor.runtime.serial import check_serials
from services.netbridge.netmon_client import NetmonClient
from services.netmon.serial import scan

BY_ID = Path("/dev/serial/by-id")


def config(**over: str) -> dict[str, str]:
    base = {"name": "rs485", "device_id": "/dev/serial/by-id/usb-FTDI_FT232R_A1-if00-port0",
            "container_path": "/dev/ttyS0"}
    base.update(over)
    return base


def test_good_configs_are_normalised() -> None:
    assert check_serials(None, BY_ID) == []
    assert check_serials([config(name=" rs485 ")], BY_ID) == [config()]


@pytest.mark.parametrize(("configs", "text"), [
    ("x", "must be a list"),
    ([config()] * 17, "at most 16"),
    (["x"], "serial_configs[0]: must be an object"),
    ([config(name="")], "serial_configs[0].name: is required"),
    ([config(name="-a")], "not a valid serial port name"),
    ([config(device_id="relative")], "absolute path"),
    ([config(device_id="/dev/serial/by-id/../../sda")], "normalised path"),
    ([config(device_id="/dev/ttyUSB0")], "is not an entry of /dev/serial/by-id"),
    ([config(container_path="/dev/pts/0")], "under /dev"),
    ([config(container_path="/var/x")], "under /dev"),
    ([config(), config(name="b")], "same device_id"),
    ([config(), config(device_id="/dev/serial/by-id/y")], "same name"),
    ([config(), config(name="b", device_id="/dev/serial/by-id/y")], "same container_path"),
])
def test_bad_configs_are_refused(configs: object, text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_serials(configs, BY_ID)
    assert text in info.value.text


def test_scan_reads_usb_facts_from_sysfs(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "ttyUSB0").touch()
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_A1-if00-port0").symlink_to("../dev/ttyUSB0")
    (by_id / "usb-gone").symlink_to("../dev/ttyUSB9")
    (by_id / "usb-plain").symlink_to("../dev/ttyUSB0")
    usb = tmp_path / "sys/devices/usb1/1-1"
    iface = usb / "1-1:1.0/ttyUSB0"
    iface.mkdir(parents=True)
    for name, value in (("idVendor", "0403"), ("idProduct", "6001"), ("serial", "A1"),
                        ("manufacturer", "FTDI"), ("product", "FT232R")):
        (usb / name).write_text(value + "\n")
    tty = tmp_path / "sys/class/tty/ttyUSB0"
    tty.mkdir(parents=True)
    (tty / "device").symlink_to(iface)
    devices = scan(by_id, tmp_path / "sys/class/tty")
    assert devices[0] == {"path": str(dev / "ttyUSB0"),
                          "device_id": str(by_id / "usb-FTDI_FT232R_A1-if00-port0"),
                          "vendor_id": "0403", "product_id": "6001", "serial": "A1",
                          "manufacturer": "FTDI", "product": "FT232R"}
    assert [d["device_id"] for d in devices] == [str(by_id / "usb-FTDI_FT232R_A1-if00-port0"),
                                                 str(by_id / "usb-plain")]
    assert scan(tmp_path / "absent") == []


def test_serial_line_round_trip_and_bad_shapes() -> None:
    devices = [{"path": "/dev/ttyUSB0", "device_id": "/dev/serial/by-id/x"}]
    assert netmon_proto.parse_line(netmon_proto.serial_line(devices, "t")) == \
        (netmon_proto.SERIAL, devices)
    for bad in (b'{"type":"serial_devices","data":[]}',
                b'{"type":"serial_devices","data":{"devices":[{"path":"/dev/x"}]}}'):
        with pytest.raises(netmon_proto.BadLine):
            netmon_proto.parse_line(bad)


def test_client_keeps_serial_devices_and_a_discovery_clears_them() -> None:
    async def scenario() -> None:
        client = NetmonClient("/nonexistent")
        devices = [{"path": "/dev/ttyUSB0", "device_id": "/dev/serial/by-id/x"}]
        await client._handle(netmon_proto.serial_line(devices, "t").strip())
        assert client.serial_devices == devices
        assert client.counters["serial_updates"] == 1
        await client._handle(netmon_proto.discovery_line([], "t").strip())
        assert client.serial_devices == []
    asyncio.run(scenario())


def test_gateway_contract_checks_serial_configs() -> None:
    from services.gateway.contracts import ContractError, validate

    base = {"container_name": "plc", "vnic_configs": [
        {"name": "eth0", "parent_interface": "oat0", "network_mode": "dhcp"}]}
    assert validate("create_new_runtime", base).params["serial_configs"] == []
    good = validate("create_new_runtime", {**base, "serial_configs": [config()]})
    assert good.params["serial_configs"] == [config()]
    for bad, where in (([config(container_path="/etc/x")], "container_path"),
                       ([{"name": "a", "device_id": "/dev/serial/by-id/x"}], "container_path"),
                       ([config(), config(name="b")], "serial_configs"),
                       ("x", "serial_configs")):
        with pytest.raises(ContractError) as info:
            validate("create_new_runtime", {**base, "serial_configs": bad})
        # The text is the original's; `field` names the offending key.
        assert where in f"{info.value.field} {info.value.text}", info.value.text
    assert validate("get_serial_devices", {"correlation_id": 3}).params == {}
