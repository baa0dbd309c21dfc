"""The limits of device work have one default each: the library's and the CLI's agree with edgeq.defaults."""

from __future__ import annotations

import click

from edgeq import defaults


def test_connection_options_default_to_them():
    from edgeq.connection import ConnectOptions

    options = ConnectOptions()
    assert options.connect_timeout_s == defaults.DEFAULT_CONNECT_TIMEOUT_S
    assert options.command_timeout_s == defaults.DEFAULT_COMMAND_TIMEOUT_S
    assert options.transfer_timeout_s == defaults.DEFAULT_TRANSFER_TIMEOUT_S


def test_fleet_options_default_to_them():
    from edgeq.fleet import FleetOptions

    options = FleetOptions()
    assert options.concurrency == defaults.DEFAULT_CONCURRENCY
    assert options.retries == defaults.DEFAULT_RETRIES


def test_device_options_and_their_flags_default_to_them():
    from edgeq.cli._devices import DeviceOptions, device_options

    expected = {
        "connect_timeout_s": defaults.DEFAULT_CONNECT_TIMEOUT_S,
        "command_timeout_s": defaults.DEFAULT_COMMAND_TIMEOUT_S,
        "transfer_timeout_s": defaults.DEFAULT_TRANSFER_TIMEOUT_S,
        "concurrency": defaults.DEFAULT_CONCURRENCY,
        "retries": defaults.DEFAULT_RETRIES,
    }
    options = DeviceOptions()
    assert {name: getattr(options, name) for name in expected} == expected

    command = click.command()(device_options(lambda devices: devices))
    flags = {p.name: p.default for p in command.params if p.name in expected}
    assert flags == expected
    parsed = command.make_context("edgeq", ["--host", "pi@10.0.0.5"])
    assert {name: parsed.params[name] for name in expected} == expected
