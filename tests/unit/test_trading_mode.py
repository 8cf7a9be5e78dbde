"""Mode guards: mode, port and managed accounts must agree."""

from __future__ import annotations

import pytest

from workers.domain.trading_mode import ModeMismatch, check_accounts, check_port


@pytest.mark.parametrize(("mode", "port"), [("paper", 4002), ("paper", 7497), ("paper", 5555),
                                            ("live", 4001), ("live", 7496), ("live", 5555)])
def test_agreeing_ports_pass(mode: str, port: int) -> None:
    check_port(mode, port)


@pytest.mark.parametrize(("mode", "port"), [("paper", 4001), ("paper", 7496), ("live", 4002), ("live", 7497)])
def test_a_port_of_the_other_mode_is_refused(mode: str, port: int) -> None:
    with pytest.raises(ModeMismatch, match=str(port)):
        check_port(mode, port)


def test_paper_worker_refuses_a_live_account_and_the_reverse() -> None:
    check_accounts("paper", ["DU0000001", "DU0000002"])
    check_accounts("live", ["U0000001"])
    with pytest.raises(ModeMismatch, match="U0000009"):
        check_accounts("paper", ["DU0000001", "U0000009"])
    with pytest.raises(ModeMismatch, match="DU0000001"):
        check_accounts("live", ["DU0000001"])
    with pytest.raises(ModeMismatch, match="no managed accounts"):
        check_accounts("paper", [])
