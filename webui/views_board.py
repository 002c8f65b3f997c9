"""Kanban board of an entity by one of its single-select fields (deal stage): columns, cards, moving cards.

The board reads through RecordService with the list's filter language (the
same query string as the list page), one column per option plus one for "no
value". Moving a card is an ordinary update (RecordService.update with the
card's version), so validation, permissions, the audit trail and version
conflicts work as in a form; on a state machine's field (the deal's stage)
the statemachine plugin takes the transition leading to the column or refuses
the move, and the board explains a missing transition in the user's language.
Only cards the user may update get move controls
(a labelled select and a button, which drag and drop in ui.js also uses).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

from litestar import Request, Response, get, post
from litestar.datastructures import MultiDict
from litestar.params import FromPath
from litestar.response import Redirect, Template
from markupsafe import escape

from xrm.api.records import list_arguments
from xrm.errors import NotFound, PermissionDenied, ValidationFailed, VersionConflict
from xrm.identifiers import quote_ident
from xrm.records.query import Condition
from xrm.registry import CompiledEntity

from .context import Page, page_of
from .display import display_name, format_value, option_label
from .views_records import TOTAL_LIMIT, UI_PARAMETERS, _query

__all__ = ["board_views"]

COLUMN_SIZE = 20
"""Cards per column at first (and per "Load more")."""
CARD_FIELDS = 2
BOARD_PARAMETERS = (*UI_PARAMETERS, "column")
NO_VALUE = "none"
"""The column key of records without a value (other columns are keyed by the option's index)."""
_CARD_PREFERENCE = ("currency", "reference", "date", "datetime", "integer", "decimal", "select", "email", "phone", "text")


class _Board:
    """What the board of (entity, field) needs: the columns, the filters, the card fields."""

    def __init__(self, page: Page, entity: str, field: str, params: MultiDict) -> None:
        self.page = page
        self.entity: CompiledEntity = page.platform.registry.get(entity)
        self.service = page.records(entity)
        self.service.policy.authorize(page.principal, entity, "read")
        f = self.service.visible_fields.get(field)
        if f is None or f.type.name != "select":
            raise NotFound(page.t.gettext("%(entity)s has no single-select field %(field)s to make a board of.",
                                          entity=self.entity.definition.label(page.language), field=field))
        self.field = f
        self.options: list[str] = list(f.schema["enum"])
        self.params = MultiDict([(k, v) for k, v in params.multi_items() if k not in BOARD_PARAMETERS])
        self.query_string = urlencode(list(self.params.multi_items()))
        self.may_update = page.may(entity, "update") and field not in self.service.read_only_fields
        self.card_fields = self._card_fields()

    @property
    def url(self) -> str:
        return f"/e/{self.entity.name}/board/{self.field.name}"

    def _card_fields(self) -> list[str]:
        display = self.entity.definition.display_field
        candidates = [(n, f) for n, f in self.service.visible_fields.items() if n not in (display, self.field.name)]
        ranked = sorted((c for c in candidates if c[1].type.name in _CARD_PREFERENCE),
                        key=lambda c: _CARD_PREFERENCE.index(c[1].type.name))
        return [n for n, _ in ranked[:CARD_FIELDS]]

    def columns(self) -> list[dict[str, Any]]:
        """(key, value, label) of every column: the options in definition order, then "no value"."""
        columns = [{"key": str(i), "value": o, "label": option_label(self.field, o, self.page.language)}
                   for i, o in enumerate(self.options)]
        columns.append({"key": NO_VALUE, "value": None, "label": self.page.t.gettext("No value")})
        return columns

    def column(self, key: str) -> dict[str, Any]:
        for column in self.columns():
            if column["key"] == key:
                return column
        raise NotFound(self.page.t.gettext("The board has no such column."))

    def column_of(self, value: Any) -> dict[str, Any]:
        return self.column(str(self.options.index(value)) if value in self.options else NO_VALUE)

    async def cards(self, column: dict[str, Any], after: str | None = None, with_total: bool = True) -> tuple[Any, set[uuid.UUID]]:
        """One page of the column's records (ValidationFailed for a filter that cannot apply) and which the user may move."""
        arguments = list_arguments(self.service, self.params, ignore=BOARD_PARAMETERS)
        arguments["where"] = [*arguments["where"], Condition(self.field.name, "eq", column["value"])]
        arguments["order_by"] = arguments["order_by"] or ["-updated_at"]
        references = [n for n in self.card_fields if self.entity.fields[n].type.name == "reference"]
        # Counted up to TOTAL_LIMIT like lists ("10,000+"): a column of a million deals is not counted whole.
        found = await self.service.list(**arguments, limit=COLUMN_SIZE, after=after, expand=references, with_total=with_total,
                                        total_limit=TOTAL_LIMIT)
        return found, await self.movable([r["id"] for r in found.records])

    async def movable(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these records the user may update (one query: the policy's update predicate)."""
        if not ids or not self.may_update:
            return set()
        params: list[Any] = [ids]
        predicate = self.service.policy.row_filter(self.page.principal, self.entity.name, "update", params)
        async with self.page.platform.db.connection() as connection:
            rows = await connection.fetch(
                f"SELECT {quote_ident('id')} FROM {self.entity.table} WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL AND ({predicate})",
                *params)
        return {r["id"] for r in rows}

    def context(self) -> dict[str, Any]:
        entity = self.entity
        return {
            "board": self, "entity": entity, "current_entity": entity.name, "field": self.field, "display": display_name,
            "count_limit": TOTAL_LIMIT,
            "value": lambda record, name: format_value(self.page.t, entity, entity.fields[name], record, self.page.platform.registry),
            "field_label": lambda name: entity.fields[name].label(self.page.language),
        }


async def _render_board(page: Page, board: _Board, *, flash: list[str] | None = None, status: int = 200) -> Template:
    columns, problems = [], []
    try:
        for column in board.columns():
            found, movable = await board.cards(column)
            total = TOTAL_LIMIT + 1 if found.total_capped else found.total or 0  # above the cap: "10,000+"
            columns.append({**column, "records": found.records, "total": total,
                            "next_cursor": found.next_cursor, "movable": movable})
    except ValidationFailed as error:
        problems = error.problems
    return page.render("ui/board.html", status_code=status, columns=columns, problems=problems, flash=flash or [],
                       **board.context())


@get("/e/{entity:str}/board/{field:str}")
async def board_page(request: Request[Any, Any, Any], entity: FromPath[str], field: FromPath[str]) -> Template:
    page = await page_of(request)
    return await _render_board(page, _Board(page, entity, field, _query(request)))


@get("/e/{entity:str}/board/{field:str}/more")
async def board_more(request: Request[Any, Any, Any], entity: FromPath[str], field: FromPath[str]) -> Template:
    """The next cards of one column (htmx: replaces the column's "Load more" item)."""
    page = await page_of(request)
    params = _query(request)
    board = _Board(page, entity, field, params)
    column = board.column(params.get("column", ""))
    found, movable = await board.cards(column, after=params.get("after"), with_total=False)
    return page.render("ui/_board_cards.html", column={**column, "records": found.records, "next_cursor": found.next_cursor,
                                                       "movable": movable}, **board.context())


def _board_params(query: str) -> MultiDict:
    return MultiDict([(k, v) for k, v in parse_qsl(query[:4000], keep_blank_values=False) if v.strip()])


@post("/e/{entity:str}/{record_id:uuid}/move", status_code=200)
async def move_card(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Response[Any] | Template:
    """Put a record into another column: an update of the board's field with the card's version."""
    page = await page_of(request)
    form = await request.form()
    board = _Board(page, entity, str(form.get("field") or ""), _board_params(str(form.get("board_query") or "")))
    htmx = bool(request.headers.get("hx-request"))
    raw = str(form.get("value") or "")
    value: Any = None if raw in ("", NO_VALUE) else raw
    try:
        version: int | None = int(str(form.get("version") or ""))
    except ValueError:
        version = None
    service = board.service
    before = await service.get(record_id)  # 404 for a record the user may not see
    status, message = 200, ""
    try:
        if version is None:
            raise ValidationFailed(entity, [])
        record = await service.update(record_id, {board.field.name: value}, expected_version=version)
    except ValidationFailed as error:
        status = 422
        message = ((version is not None and _no_transition(page, board, before, value))
                   or "; ".join(p.message for p in error.problems) or page.t.gettext("The card's version is missing."))
        message = page.t.gettext("Not moved: %(reason)s", reason=message)
    except VersionConflict:
        status, message = 409, page.t.gettext("Not moved: someone else changed this record meanwhile. Reload the board to see the current state.")
    except PermissionDenied:
        status, message = 403, page.t.gettext("Not moved: you may not change this record.")
    name = display_name(board.entity, before)
    if status != 200:
        if not htmx:
            return await _render_board(page, board, flash=[f"{name}: {message}"], status=status)
        # htmx: the message goes next to the card, which stays where it is (ui.js swaps these error statuses).
        return Response(content=str(escape(message)), status_code=status, media_type="text/html",
                        headers={"HX-Retarget": f"#msg-{record_id}", "HX-Reswap": "innerHTML"})
    if not htmx:
        return Redirect(board.url + (f"?{board.query_string}" if board.query_string else ""), status_code=303)
    old, new = board.column_of(before.get(board.field.name)), board.column_of(record.get(board.field.name))
    counts = {}
    for column in {old["key"]: old, new["key"]: new}.values():
        counts[column["key"]] = await _count(board, column)
    references = [n for n in board.card_fields if board.entity.fields[n].type.name == "reference"]
    shown = (await service.list(where=[("id", "eq", str(record_id))], expand=references, limit=1)).records or [record]
    movable = await board.movable([record["id"]])
    response = page.render(
        "ui/_board_moved.html", record=shown[0], column=new, old=old, counts=counts, movable=movable,
        announcement=page.t.gettext("%(name)s moved to %(column)s.", name=name, column=new["label"]), **board.context())
    response.headers.update({"HX-Retarget": f"#cards-{new['key']}", "HX-Reswap": "afterbegin"})
    return response


def _no_transition(page: Page, board: _Board, before: dict[str, Any], value: Any) -> str | None:
    """For a refused move: why, in the user's language, when no transition of the state machine leads there.

    The move itself is an ordinary update (RecordService: permissions, the
    version, validation, then the statemachine plugin, which takes the
    transition leading to the new column or vetoes the write). The plugin's
    veto is English; this names both states by their labels and the
    transitions possible from the card's state. A guard that fails (role,
    condition, missing field) keeps the plugin's message (None here).
    """
    try:
        from xrm.builtins.statemachine.machine import machine_of
    except ImportError:  # the plugin is not installed: no machine to explain
        return None
    machine = machine_of(board.entity.definition)
    source = before.get(board.field.name)
    if (machine is None or machine.field != board.field.name or source is None or value == source
            or value not in machine.states):
        return None
    if any(t.leaves(source) and t.target == value for t in machine.transitions):
        return None
    definition, t, language = board.entity.definition, page.t, page.language
    roles = set(page.principal.roles)
    possible = [f"{tr.title(language)} (→ {machine.state_label(definition, tr.target, language)})" for tr in machine.transitions
                if tr.leaves(source) and tr.target != source and (not tr.roles or roles & set(tr.roles))]
    return t.gettext("there is no transition from %(source)s to %(target)s. Possible from here: %(possible)s.",
                     source=machine.state_label(definition, source, language),
                     target=machine.state_label(definition, value, language),
                     possible=", ".join(possible) or t.gettext("no transition is possible"))


async def _count(board: _Board, column: dict[str, Any]) -> int:
    arguments = list_arguments(board.service, board.params, ignore=BOARD_PARAMETERS)
    where = [*arguments["where"], Condition(board.field.name, "eq", column["value"])]
    try:
        return await board.service.count(where=where, search=arguments["search"], include_deleted=arguments["include_deleted"],
                                         limit=TOTAL_LIMIT)
    except ValidationFailed:
        return 0


board_views = [board_page, board_more, move_card]
