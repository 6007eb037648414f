"""The shared number-with-unit grammar of --max-memory, --max-latency and --recover-time."""

import pytest

from hwopt.errors import HwoptError
from hwopt.recover.budget import parse_duration
from hwopt.units import split_quantity


def test_split_quantity_reads_number_and_unit():
    assert split_quantity(" 3.5 MB ") == (3.5, "mb")
    assert split_quantity("800µs") == (800.0, "µs")
    assert split_quantity(".5") == (0.5, "")
    for bad in ("", None, "-1s", "1e3s", "ms", "1.2.3"):
        assert split_quantity(bad) is None


def test_recover_time_units():
    assert parse_duration("10m") == 600.0 and parse_duration("90s") == 90.0
    assert parse_duration("1.5h") == 5400.0 and parse_duration("600") == 600.0
    for bad in ("0m", "-1", "10 parsecs", ""):
        with pytest.raises(HwoptError, match="bad duration"):
            parse_duration(bad)
