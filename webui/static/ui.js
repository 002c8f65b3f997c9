// xrm web UI: the little JavaScript htmx does not cover (no build step, no framework).
document.addEventListener("click", (event) => {
  // A choice in a reference lookup: put its id into the hidden input, its name into the search box.
  const option = event.target.closest("[data-lookup-id]");
  if (option) {
    const field = option.dataset.lookupField;
    const form = option.closest("form");
    const chosen = form.querySelector(`[data-lookup-value="${field}"]`);
    chosen.value = option.dataset.lookupId;
    chosen.dispatchEvent(new Event("change", { bubbles: true }));  // a list filter applies at once
    const input = form.querySelector(`[data-lookup-input="${field}"]`);
    input.value = option.dataset.lookupLabel;
    option.closest(".lookup-results").innerHTML = "";
    input.focus();
  }
});
document.addEventListener("input", (event) => {
  // Typing over a chosen reference clears it; an empty box means "no reference".
  const input = event.target.closest("[data-lookup-input]");
  if (input) {
    input.form.querySelector(`[data-lookup-value="${input.dataset.lookupInput}"]`).value = "";
  }
  // A control the user is correcting no longer shows the server's old message about it (the next
  // save or check asks the server again); without JavaScript the message stays until then.
  const edited = event.target;
  if (edited.getAttribute && edited.getAttribute("aria-invalid") === "true") {
    edited.removeAttribute("aria-invalid");
    for (const id of (edited.getAttribute("aria-describedby") || "").split(/\s+/)) {
      const message = id.endsWith("-error") && document.getElementById(id);
      if (message) message.hidden = true;
    }
  }
});
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// -- boards, bulk actions (docs/webui.md "Boards", "Bulk actions") ----------------------------
// A submit button with data-confirm-submit asks first (capture phase: before htmx sends the form).
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  if (button && button.dataset.confirmSubmit && !window.confirm(button.dataset.confirmSubmit)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);
// "Select all on this page" ticks every row checkbox of the list.
document.addEventListener("change", (event) => {
  const all = event.target.closest("[data-select-all]");
  if (all) {
    document.querySelectorAll(`input[type=checkbox][form="${all.getAttribute("form")}"][name=ids]`).forEach((box) => { box.checked = all.checked; });
  }
});
// Inside [data-swap-errors] (the board), a refused change (403, 409, 422) shows its message where the server points (HX-Retarget).
document.addEventListener("htmx:beforeSwap", (event) => {
  const status = event.detail.xhr.status;
  if ([403, 404, 409, 422].includes(status) && event.detail.requestConfig.elt.closest("[data-swap-errors]")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
    const select = event.detail.requestConfig.elt.querySelector("select[data-current]");
    if (select) { select.value = select.querySelector(`option[data-key="${select.dataset.current}"]`)?.value ?? select.value; }
  }
});
// A moved card keeps the keyboard focus (it is a new element at the top of its new column).
document.addEventListener("htmx:afterSettle", (event) => {
  const card = event.detail.target.closest(".cards") && event.detail.target.querySelector(".card[data-moved]");
  if (card) { card.removeAttribute("data-moved"); card.focus(); }
});
// Drag and drop on the board: dropping a card on a column submits the card's own "Move to" form.
let draggedCard = null;
document.addEventListener("dragstart", (event) => {
  const card = event.target.closest && event.target.closest("[data-card]");
  if (card) {
    draggedCard = card;
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", card.id);
    card.classList.add("dragging");
  }
});
document.addEventListener("dragend", () => {
  if (draggedCard) { draggedCard.classList.remove("dragging"); draggedCard = null; }
  document.querySelectorAll(".board-column.drop-target").forEach((c) => c.classList.remove("drop-target"));
});
document.addEventListener("dragover", (event) => {
  const column = draggedCard && event.target.closest(".board-column");
  if (column) {
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    document.querySelectorAll(".board-column.drop-target").forEach((c) => { if (c !== column) c.classList.remove("drop-target"); });
    column.classList.add("drop-target");
  }
});
document.addEventListener("drop", (event) => {
  const column = draggedCard && event.target.closest(".board-column");
  if (!column) return;
  event.preventDefault();
  column.classList.remove("drop-target");
  const form = draggedCard.querySelector("form[data-move]");
  const select = form && form.querySelector("select[name=value]");
  if (select && column.dataset.column !== select.dataset.current) {
    let option = select.querySelector(`option[data-key="${column.dataset.column}"]`);
    if (!option) {  // "no value" of a required field: not offered in the select, but the server explains why it cannot be
      option = new Option("", column.dataset.value);
      option.dataset.key = column.dataset.column;
      select.add(option);
    }
    select.value = option.value;
    form.requestSubmit();
  }
});

// -- entity designer (docs/webui.md "Entity designer") ------------------------------------
// Choosing a field type shows the inputs of that type (options, referenced entity) at once.
document.addEventListener("change", (event) => {
  const type = event.target.closest("select[data-field-type]");
  if (type) {
    document.querySelectorAll(`[data-for-types][data-field="${type.dataset.fieldType}"]`).forEach((part) => {
      part.hidden = !part.dataset.forTypes.split(" ").includes(type.value);
    });
  }
});
document.addEventListener("click", (event) => {
  // "Copy" next to a value shown once (a new API token): copy it, say so on the button.
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const input = document.querySelector(button.dataset.copy);
  input.select();
  const done = () => { button.textContent = button.dataset.copied; };
  if (navigator.clipboard) navigator.clipboard.writeText(input.value).then(done, () => document.execCommand("copy") && done());
  else if (document.execCommand("copy")) done();
});
