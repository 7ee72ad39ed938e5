"""Order-list (OCO) endpoints and ``POST /api/v3/order/cancelReplace``, mixed into ``Emulator``.

cancelReplace follows Binance: the new order's API-level checks (parameters, filters, order
counts, counted *before* the cancel) fail the whole request with their plain error and cancel
nothing; then the cancel runs, then the new order. ``STOP_ON_FAILURE`` stops after a failed
cancel (400, -2022, newOrderResult NOT_ATTEMPTED); a new order the matching engine rejects after
a successful cancel (funds, LIMIT_MAKER would take, stop would trigger) gives 409, -2021 "Order
cancel-replace partially failed." with the ``data`` object; both failing (``ALLOW_FAILURE``)
gives 400, -2022. Cancelling an order of an executing list cancels the list (cancelResponse is
then the list status).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.support.emulator.orderlist import OrderList, legacy_oco_params
from tests.support.emulator.params import mandatory
from tests.support.emulator.rules import ApiError

if TYPE_CHECKING:
    from tests.support.emulator.matching import Account
    from tests.support.emulator.orders import EmuOrder
    from tests.support.emulator.rules import SymbolRules

DAY_MS = 86_400_000


def _int(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")


class ListHandlers:
    """``_h_<name>`` handlers for the routes in ``handlers.ROUTES`` that involve order lists."""

    account: Account
    _now: int
    if TYPE_CHECKING:
        def _rules(self, params: dict[str, str]) -> SymbolRules: ...
        def _client_id(self, params: dict[str, str], name: str) -> str: ...
        def _resp_type(self, params: dict[str, str]) -> str: ...
        def _cancel_reply(self, order: EmuOrder, params: dict[str, str], name: str = "newClientOrderId",
                          cancel_id: str | None = None) -> dict[str, Any]: ...
        def _save(self) -> None: ...

    # -- placement ------------------------------------------------------------------------
    def _place_oco(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        kind = (params.get("newOrderRespType") or "RESULT").upper()
        if kind not in ("ACK", "RESULT", "FULL"):
            raise ApiError(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        list_cid = self._client_id(params, "listClientOrderId")
        ids = {pos: self._client_id(params, pos + "ClientOrderId") for pos in ("above", "below")}
        lst, legs = self.account.place_oco(rules, self, params, self._now, list_cid, ids)
        self._save()
        return json.dumps(lst.to_api(legs, [o.to_api(kind.lower()) for o in legs]))

    def _h_new_oco(self, params: dict[str, str]) -> str:
        return self._place_oco(params)

    def _h_new_oco_legacy(self, params: dict[str, str]) -> str:
        self._rules(params)
        return self._place_oco(legacy_oco_params(params))

    # -- cancel and queries ---------------------------------------------------------------
    def _list_cancel_reply(self, rules: SymbolRules, lst: OrderList, cancel_id: str) -> dict[str, Any]:
        legs = self.account.cancel_list(rules, lst, self._now)
        return lst.to_api(legs, [self._cancel_reply(o, {}, cancel_id=cancel_id) for o in legs], self._now)

    def _h_cancel_order_list(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        list_id, list_cid = _int(params, "orderListId"), params.get("listClientOrderId") or None
        if list_id is None and list_cid is None:
            raise ApiError(-1102, "Param 'listClientOrderId' or 'orderListId' must be sent, but both were empty/null!")
        lst = self.account.find_list(list_id, list_cid)
        if lst is None or lst.symbol != rules.symbol:
            raise ApiError(-2011, "Unknown order sent.")
        out = self._list_cancel_reply(rules, lst, self._client_id(params, "newClientOrderId"))
        self._save()
        return json.dumps(out)

    def _h_query_order_list(self, params: dict[str, str]) -> str:
        list_id, list_cid = _int(params, "orderListId"), params.get("origClientOrderId") or None
        if list_id is None and list_cid is None:
            raise ApiError(-1102, "Param 'origClientOrderId' or 'orderListId' must be sent, but both were empty/null!")
        lst = self.account.find_list(list_id, list_cid)
        if lst is None:
            raise ApiError(-2013, "Order list does not exist.")
        return json.dumps(self._list_status(lst))

    def _list_status(self, lst: OrderList) -> dict[str, Any]:
        t = lst.time if lst.is_open else lst.update_time
        return lst.to_api(self.account.list_orders(lst), transaction_time=t)

    def _h_open_order_lists(self, params: dict[str, str]) -> str:
        return json.dumps([self._list_status(lst) for lst in self.account.open_lists()])

    def _h_all_order_lists(self, params: dict[str, str]) -> str:
        """Newest first, as in Binance's example; ``fromId`` lists from that id upwards."""
        from_id, start, end = _int(params, "fromId"), _int(params, "startTime"), _int(params, "endTime")
        limit = _int(params, "limit") or 500
        if not 1 <= limit <= 1000:
            raise ApiError(-1130, "Invalid data sent for a parameter.")
        if start is not None and end is not None and end - start > DAY_MS:
            raise ApiError(-1127, "More than 24 hours between startTime and endTime.")
        rows = [lst for lst in self.account.lists if (from_id is None or lst.order_list_id >= from_id)
                and (start is None or lst.time >= start) and (end is None or lst.time <= end)]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return json.dumps([self._list_status(lst) for lst in reversed(rows)])

    # -- cancelReplace --------------------------------------------------------------------
    def _h_cancel_replace(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        mode = params.get("cancelReplaceMode")
        if not mode:
            raise mandatory("cancelReplaceMode")
        if mode not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
            raise ApiError(-1100, "Illegal characters found in parameter 'cancelReplaceMode'; legal range is "
                                  "'STOP_ON_FAILURE, ALLOW_FAILURE'.")
        restriction = params.get("cancelRestrictions") or None
        if restriction not in (None, "ONLY_NEW", "ONLY_PARTIALLY_FILLED"):
            raise ApiError(-1145, "Invalid cancelRestrictions")
        cancel_id, cancel_cid = _int(params, "cancelOrderId"), params.get("cancelOrigClientOrderId") or None
        if cancel_id is None and cancel_cid is None:
            raise ApiError(-1102, "Param 'cancelOrigClientOrderId' or 'cancelOrderId' must be sent, but both were "
                                  "empty/null!")
        if not rules.allows("cancelReplaceAllowed"):
            raise ApiError(-1013, "Order cancel-replace is not supported for this symbol.")
        kind = self._resp_type(params)
        new_cid = self._client_id(params, "newClientOrderId")
        cancel_ack = self._client_id(params, "cancelNewClientOrderId")
        spec = self.account.check(rules, self, params, new_cid)  # a failure here cancels nothing

        cancel_ok, cancel_resp = False, None
        order = self.account.find(rules.symbol, cancel_id, cancel_cid)
        try:
            if order is None or not order.is_open:
                raise ApiError(-2011, "Unknown order sent.")
            if restriction is not None and order.status != restriction.removeprefix("ONLY_"):
                raise ApiError(-2011, "Order was not canceled due to cancel restrictions.")
            lst = self.account.lists[order.order_list_id] if order.order_list_id >= 0 else None
            if lst is not None and lst.is_open:
                cancel_resp = self._list_cancel_reply(rules, lst, cancel_ack)
            else:
                self.account.cancel(rules, order, self._now)
                cancel_resp = self._cancel_reply(order, {}, cancel_id=cancel_ack)
            cancel_ok = True
        except ApiError as err:
            cancel_resp = err.reply()
        if not cancel_ok and mode == "STOP_ON_FAILURE":
            raise ApiError(-2022, "Order cancel-replace failed.", 400,
                           {"cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                            "cancelResponse": cancel_resp, "newOrderResponse": None})
        try:
            new_order, trades = self.account.execute(spec, self, self._now)
            new_ok, new_resp = True, new_order.to_api(kind, trades)
        except ApiError as err:
            new_ok, new_resp = False, err.reply()
        self._save()
        data = {"cancelResult": "SUCCESS" if cancel_ok else "FAILURE",
                "newOrderResult": "SUCCESS" if new_ok else "FAILURE",
                "cancelResponse": cancel_resp, "newOrderResponse": new_resp}
        if cancel_ok and new_ok:
            return json.dumps(data)
        if cancel_ok or new_ok:
            raise ApiError(-2021, "Order cancel-replace partially failed.", 409, data)
        raise ApiError(-2022, "Order cancel-replace failed.", 400, data)
