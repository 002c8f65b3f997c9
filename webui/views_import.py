"""The import wizard: upload a CSV, map its columns, dry run, import with progress (/e/{entity}/import).

1. Upload (multipart, at most UPLOAD_MAX_BYTES). The file is kept on the
   server in a folder with a random name under `<data_dir>/ui-imports/`; the
   browser only ever holds that random job id, never a path. Encoding and
   delimiter are detected as the importer detects them (xrm.transfer.sources).
2. Mapping: one select per column, suggested as the importer maps by itself
   (field name, then label in English or German); the user may change each or
   ignore a column.
3. Dry run: the importer's dry run (everything checked in a transaction that
   is rolled back), with the rows' errors and the counts.
4. Import: runs in a background asyncio task, as the user (their principal
   and the platform's policy: permissions, field security and validation
   apply, the audit trail names them); the page polls a small fragment every
   second until it is done.

Step 1 also asks what to import: the entity's records, or what a plugin
imports next to them (xrm_import_targets: the entity's links, connections);
then the mapping offers that target's columns, and the check and the import
run that target (links and connections are all or nothing).

A job belongs to the user who uploaded it (anyone else gets 404). The folder
is deleted after the import, and any folder older than KEEP_SECONDS is
deleted at the next upload. Progress lives in this process's memory (with
several server processes, a poll may reach another one: run the wizard's
server with one worker or sticky sessions).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, Template
from xrm.errors import NotFound, XrmError
from xrm.records.principal import Principal
from xrm.runtime import Platform
from xrm.transfer import import_file
from xrm.plugins import ImportTarget, get_plugin_manager
from xrm.transfer.importer import ColumnMapper, Target, normalise
from xrm.transfer.sources import count_rows, open_source

from .context import Page, page_of
from .i18n import pick_language, translator
from .views_admin import describe_error

__all__ = ["import_views"]

log = logging.getLogger("xrm.webui")

UPLOAD_MAX_BYTES = 20 * 1024 * 1024
KEEP_SECONDS = 3600
SAMPLE_ROWS = 3
SHOWN_ERRORS = 200
FOLDER = "ui-imports"
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
NUMBER_FORMATS = ("auto", "de", "en")

_jobs: dict[str, dict[str, Any]] = {}
"""Imports started in this process: job id -> progress and, when done, the summary."""
_tasks: set[asyncio.Task[None]] = set()


# -- the job folder ------------------------------------------------------------------
def _base(platform: Platform) -> Path:
    return Path(platform.settings.data_dir) / FOLDER


def _folder(platform: Platform, job_id: str) -> Path:
    if not _JOB_ID.match(job_id):
        raise NotFound("No such import")
    return _base(platform) / job_id


def _sweep(platform: Platform) -> None:
    """Delete uploads older than KEEP_SECONDS (abandoned wizards) and forget old finished jobs."""
    now = time.time()
    base = _base(platform)
    if base.is_dir():
        for folder in base.iterdir():
            try:
                if folder.is_dir() and now - folder.stat().st_mtime > KEEP_SECONDS and folder.name not in _running():
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue
    for job_id, state in list(_jobs.items()):
        if state.get("finished_at") and now - state["finished_at"] > KEEP_SECONDS:
            _jobs.pop(job_id, None)


def _running() -> set[str]:
    return {job_id for job_id, state in _jobs.items() if not state.get("done")}


def _load(page: Page, entity: str, job_id: str) -> tuple[Path, dict[str, Any]]:
    """The job's folder and its stored state; 404 unless it is this user's upload for this entity."""
    folder = _folder(page.platform, job_id)
    try:
        meta = json.loads((folder / "job.json").read_text("utf-8"))
    except (OSError, ValueError):
        raise NotFound(page.t.gettext("This import is gone (finished, or older than an hour). Please upload the file again.")) from None
    if meta.get("user_id") != str(page.principal.id) or meta.get("entity") != entity:
        raise NotFound(page.t.gettext("This import is gone (finished, or older than an hour). Please upload the file again."))
    return folder, meta


def _save(folder: Path, meta: dict[str, Any]) -> None:
    (folder / "job.json").write_text(json.dumps(meta), "utf-8")


def _authorized(page: Page, entity: str, target: str | None = None) -> Any:
    """The entity, if the user may create its records, or (importing links or connections, `target`) change them (403 otherwise)."""
    compiled = page.platform.registry.get(entity)
    page.records(entity).policy.authorize(page.principal, entity, "update" if target else "create")
    if page.principal.read_only:
        from xrm.errors import PermissionDenied

        raise PermissionDenied(page.t.gettext("You may not create records."))
    return compiled


def _targets(page: Page, entity: str) -> dict[str, ImportTarget]:
    """What plugins import from this entity's import page (its links, connections), by name."""
    return {name: t for name, t in get_plugin_manager().import_targets(page.platform.registry).items() if t.entity in (None, entity)}


def _target_of(page: Page, entity: str, meta: dict[str, Any]) -> ImportTarget | None:
    name = meta.get("target")
    if not name:
        return None
    found = _targets(page, entity).get(name)
    if found is None:
        raise NotFound(page.t.gettext("This import is gone (finished, or older than an hour). Please upload the file again."))
    return found


def _target_label(page: Page, target: ImportTarget | None) -> str:
    return (target.label.get(page.language) or target.label.get("en") or target.name) if target else ""


# -- step 1: upload --------------------------------------------------------------------
@get("/e/{entity:str}/import")
async def upload_form(request: Request[Any, Any, Any], entity: FromPath[str]) -> Template:
    page = await page_of(request)
    compiled = _page_entity(page, entity)
    return page.render("ui/import/upload.html", entity=compiled, current_entity=entity, error="", step=1,
                       max_mb=UPLOAD_MAX_BYTES // (1024 * 1024), targets=_target_choices(page, entity), chosen_target="")


def _page_entity(page: Page, entity: str) -> Any:
    """The upload page is for users who may create the entity's records or change them (links, connections)."""
    try:
        return _authorized(page, entity)
    except XrmError:
        if not _targets(page, entity):
            raise
        return _authorized(page, entity, target="any")


def _target_choices(page: Page, entity: str) -> list[tuple[str, str]]:
    """("", the records) if the user may create them, then each plugin target: (name, label)."""
    choices = []
    if page.records(entity).policy_scope("create") != "none":
        choices.append(("", page.t.gettext("Records: %(entities)s", entities=page.label(page.platform.registry.get(entity), plural=True))))
    return choices + [(name, _target_label(page, t)) for name, t in _targets(page, entity).items()]


@post("/e/{entity:str}/import", status_code=303, request_max_body_size=UPLOAD_MAX_BYTES + 64 * 1024)
async def upload(request: Request[Any, Any, Any], entity: FromPath[str]) -> Response[Any]:
    try:
        length = int(request.headers.get("content-length") or 0)
    except ValueError:
        length = 0
    if length > UPLOAD_MAX_BYTES + 64 * 1024:  # before reading (and parsing) the body
        t = translator(pick_language(None, request.headers.get("accept-language", "")))
        return Template(template_name="ui/error.html", status_code=413, context={
            "p": None, "_": t.gettext, "language": t.language, "title": t.gettext("The file is too large"),
            "detail": t.gettext("Files of up to %(size)d MB can be imported here.", size=UPLOAD_MAX_BYTES // (1024 * 1024))})
    page = await page_of(request)  # checks the CSRF token (form field)
    form = await request.form()
    target = str(form.get("target") or "")
    if target and target not in _targets(page, entity):
        target = ""
    compiled = _authorized(page, entity, target or None)

    def again(message: str) -> Template:
        return page.render("ui/import/upload.html", status_code=422, entity=compiled, current_entity=entity, error=message,
                           step=1, max_mb=UPLOAD_MAX_BYTES // (1024 * 1024), targets=_target_choices(page, entity), chosen_target=target)

    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return again(page.t.gettext("Choose a CSV file to upload."))
    data = await file.read(UPLOAD_MAX_BYTES + 1)
    if not data.strip():
        return again(page.t.gettext("The file is empty."))
    if len(data) > UPLOAD_MAX_BYTES:
        return again(page.t.gettext("Files of up to %(size)d MB can be imported here.", size=UPLOAD_MAX_BYTES // (1024 * 1024)))
    _sweep(page.platform)
    job_id = secrets.token_urlsafe(24)
    folder = _folder(page.platform, job_id)
    folder.mkdir(parents=True, mode=0o700)
    path = folder / "upload.csv"
    path.write_bytes(data)
    try:
        source = open_source(path, "csv")
        try:
            columns = [source.columns[i] for i in sorted(source.columns)]
            encoding, delimiter = source.encoding, source.delimiter
        finally:
            source.close()
    except XrmError as error:
        shutil.rmtree(folder, ignore_errors=True)
        return again(page.t.gettext("The file cannot be read as CSV: %(reason)s", reason=describe_error(error)))
    _save(folder, {"user_id": str(page.principal.id), "entity": entity, "target": target, "filename": Path(file.filename).name[:200],
                   "encoding": encoding, "delimiter": delimiter, "columns": columns, "created": time.time()})
    return Redirect(f"/e/{entity}/import/{job_id}", status_code=303)


# -- step 2: mapping ---------------------------------------------------------------------
def _choices(page: Page, entity: str, target: ImportTarget | None = None) -> list[tuple[str, str]]:
    """What a column can fill: the record id, each field the user may write, a currency field's code (or the target's columns)."""
    if target is not None:
        return [(name, f"{labels.get(page.language) or labels.get('en') or name} ({name})") for name, labels in target.columns.items()]
    service = page.records(entity)
    choices = [("id", page.t.gettext("Record id"))]
    for name, f in service.visible_fields.items():
        if name in service.read_only_fields:
            continue
        label = f.label(page.language)
        choices.append((name, label if label == name else f"{label} ({name})"))
        if f.type.name == "currency":
            choices.append((f"{name}_currency", page.t.gettext("%(field)s: currency code", field=label)))
    return choices


def _target_name(target: Target | None) -> str:
    if target is None:
        return ""
    if target.role == "id":
        return "id"
    return f"{target.field}_currency" if target.role == "currency" else target.field


def _suggested(page: Page, compiled: Any, columns: list[str], target: ImportTarget | None = None) -> list[str]:
    """The importer's own choice per column (name, then en/de label), as it would map the file unaided."""
    if target is not None:
        names = {normalise(text): name for name, labels in target.columns.items() for text in (name, *labels.values())}
        chosen: list[str] = []
        for column in columns:
            found = names.get(normalise(column), "")
            chosen.append(found if found not in chosen else "")
        return chosen
    mapper = ColumnMapper(compiled.definition, None)
    return [_target_name(mapper.target(index, column)) for index, column in enumerate(columns)]


def _samples(folder: Path, meta: dict[str, Any]) -> list[list[str]]:
    """The first rows' cells per column (shown next to each column)."""
    source = open_source(folder / "upload.csv", "csv", encoding=meta["encoding"], delimiter=meta["delimiter"])
    rows: list[dict[Any, Any]] = []
    try:
        for _, row in source.rows():
            rows.append(row)
            if len(rows) >= SAMPLE_ROWS:
                break
    except XrmError:
        pass
    finally:
        source.close()
    return [[str(row.get(i, ""))[:80] for row in rows if str(row.get(i, "")).strip()] for i in range(len(meta["columns"]))]


def _mapping_page(page: Page, compiled: Any, job_id: str, folder: Path, meta: dict[str, Any], *,
                  chosen: list[str] | None = None, error: str = "", status: int = 200) -> Template:
    target = _target_of(page, compiled.name, meta)
    choices = _choices(page, compiled.name, target)
    allowed = {value for value, _ in choices}
    if chosen is None:
        stored = meta.get("mapping")
        if stored is not None:
            chosen = [stored.get(column) or "" for column in meta["columns"]]
        else:
            chosen = [c if c in allowed else "" for c in _suggested(page, compiled, meta["columns"], target)]
    delimiter = {",": page.t.gettext("comma"), ";": page.t.gettext("semicolon"), "\t": page.t.gettext("tab")}.get(
        meta["delimiter"], meta["delimiter"])
    return page.render(
        "ui/import/mapping.html", status_code=status, entity=compiled, current_entity=compiled.name, job_id=job_id, step=2,
        meta=meta, delimiter=delimiter, columns=list(zip(meta["columns"], chosen, _samples(folder, meta))), choices=choices,
        number_formats=NUMBER_FORMATS, error=error, target_label=_target_label(page, target),
    )


@get("/e/{entity:str}/import/{job_id:str}")
async def mapping_form(request: Request[Any, Any, Any], entity: FromPath[str], job_id: FromPath[str]) -> Template:
    page = await page_of(request)
    _page_entity(page, entity)  # before the job is looked at: 403, not 404, for a user who may import nothing here
    folder, meta = _load(page, entity, job_id)
    compiled = _authorized(page, entity, meta.get("target") or None)
    return _mapping_page(page, compiled, job_id, folder, meta)


# -- step 3: dry run ---------------------------------------------------------------------------
def _options(meta: dict[str, Any]) -> dict[str, Any]:
    return {"mapping": meta["mapping"], "number_format": meta.get("number_format", "auto"), "timezone": meta.get("timezone") or None}


@post("/e/{entity:str}/import/{job_id:str}/check", status_code=200)
async def dry_run(request: Request[Any, Any, Any], entity: FromPath[str], job_id: FromPath[str]) -> Template:
    page = await page_of(request)
    _page_entity(page, entity)  # before the job is looked at: 403, not 404, for a user who may import nothing here
    folder, meta = _load(page, entity, job_id)
    compiled = _authorized(page, entity, meta.get("target") or None)
    target = _target_of(page, entity, meta)
    form = await request.form()
    allowed = {value for value, _ in _choices(page, entity, target)}
    chosen = []
    for index in range(len(meta["columns"])):
        value = form.get(f"map.{index}")
        chosen.append(value if isinstance(value, str) and value in allowed else "")
    number_format = form.get("number_format")
    timezone = form.get("timezone")
    meta["number_format"] = number_format if number_format in NUMBER_FORMATS else "auto"
    meta["timezone"] = timezone.strip()[:64].replace("\x00", "") if isinstance(timezone, str) else ""
    meta["mapping"] = {column: (value or None) for column, value in zip(meta["columns"], chosen)}
    _save(folder, meta)
    try:
        report = await import_file(
            page.platform.db, page.platform.registry, meta.get("target") or entity, folder / "upload.csv", format="csv",
            encoding=meta["encoding"], delimiter=meta["delimiter"], principal=page.principal, policy=page.platform.policy,
            dry_run=True, **_options(meta),
        )
    except XrmError as error:
        return _mapping_page(page, compiled, job_id, folder, meta, chosen=chosen, error=describe_error(error), status=422)
    return page.render("ui/import/check.html", entity=compiled, current_entity=entity, job_id=job_id, step=3, meta=meta,
                       report=report, errors=report.errors[:SHOWN_ERRORS], target_label=_target_label(page, target))


# -- step 4: import with progress ------------------------------------------------------------------
async def _run(job_id: str, state: dict[str, Any], platform: Platform, principal: Principal, entity: str,
               folder: Path, meta: dict[str, Any]) -> None:
    def progress(rows: int) -> None:
        state["rows"] = rows

    try:
        report = await import_file(
            platform.db, platform.registry, meta.get("target") or entity, folder / "upload.csv", format="csv", encoding=meta["encoding"],
            delimiter=meta["delimiter"], principal=principal, policy=platform.policy, progress=progress, **_options(meta),
        )
        state.update(rows=report.rows, created=report.created, updated=report.updated, skipped=report.skipped,
                     error_count=report.error_count, errors=[e.as_dict() for e in report.errors[:SHOWN_ERRORS]])
    except XrmError as error:
        state["failed"] = describe_error(error)
    except Exception:
        log.exception("import %s into %s failed", job_id[:6], entity)
        state["failed"] = ""
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        state.update(done=True, finished_at=time.time())


@post("/e/{entity:str}/import/{job_id:str}/run", status_code=303)
async def start_import(request: Request[Any, Any, Any], entity: FromPath[str], job_id: FromPath[str]) -> Response[Any]:
    page = await page_of(request)
    _page_entity(page, entity)
    if job_id in _jobs and _jobs[job_id]["user_id"] == str(page.principal.id):
        return Redirect(f"/e/{entity}/import/{job_id}/progress", status_code=303)  # started already (a second click)
    folder, meta = _load(page, entity, job_id)
    _authorized(page, entity, meta.get("target") or None)
    target = _target_of(page, entity, meta)
    if meta.get("mapping") is None:
        return Redirect(f"/e/{entity}/import/{job_id}", status_code=303)
    total = await asyncio.to_thread(count_rows, folder / "upload.csv", "csv", encoding=meta["encoding"], delimiter=meta["delimiter"])
    state: dict[str, Any] = {"user_id": str(page.principal.id), "entity": entity, "rows": 0, "total": total, "done": False,
                             "filename": meta.get("filename", ""), "target_label": _target_label(page, target)}
    _jobs[job_id] = state
    task = asyncio.create_task(_run(job_id, state, page.platform, page.principal, entity, folder, meta))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return Redirect(f"/e/{entity}/import/{job_id}/progress", status_code=303)


def _job(page: Page, entity: str, job_id: str) -> dict[str, Any]:
    state = _jobs.get(job_id)
    if state is None or state["user_id"] != str(page.principal.id) or state["entity"] != entity:
        raise NotFound(page.t.gettext("No such import."))
    return state


@get("/e/{entity:str}/import/{job_id:str}/progress")
async def progress_page(request: Request[Any, Any, Any], entity: FromPath[str], job_id: FromPath[str]) -> Template:
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    return page.render("ui/import/progress.html", entity=compiled, current_entity=entity, job_id=job_id, step=4,
                       job=_job(page, entity, job_id))


@get("/e/{entity:str}/import/{job_id:str}/status")
async def progress_fragment(request: Request[Any, Any, Any], entity: FromPath[str], job_id: FromPath[str]) -> Template:
    """Polled every second by the progress page (htmx) until the import is done."""
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    return page.render("ui/import/_status.html", entity=compiled, job_id=job_id, job=_job(page, entity, job_id))


import_views = [upload_form, upload, mapping_form, dry_run, start_import, progress_page, progress_fragment]
