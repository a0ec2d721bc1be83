// Drag-and-drop on the pipeline board. Without it, each card's "Move to" form does the same.
(function () {
  "use strict";
  var dragged = null;

  function board() { return document.getElementById("deal-board"); }

  document.addEventListener("dragstart", function (event) {
    var card = event.target.closest && event.target.closest(".deal-card");
    if (!card) return;
    dragged = card;
    card.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", card.dataset.deal);
  });

  document.addEventListener("dragend", function () {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
    document.querySelectorAll(".drop-hover").forEach(function (el) { el.classList.remove("drop-hover"); });
  });

  document.addEventListener("dragover", function (event) {
    var zone = dragged && event.target.closest && event.target.closest("[data-drop-stage]");
    if (!zone || !board().contains(zone)) return;
    event.preventDefault();
    zone.classList.add("drop-hover");
  });

  document.addEventListener("dragleave", function (event) {
    var zone = event.target.closest && event.target.closest("[data-drop-stage]");
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("drop-hover");
  });

  // On a phone the board shows one stage at a time, chosen in the stage switcher (the choice survives
  // the board being swapped after a move). Without JavaScript every stage is listed, one below the other.
  var STAGE_KEY = "minicrm.board.stage";

  function showStage() {
    var root = board();
    var select = root && root.querySelector("[data-board-switcher]");
    if (!select) return;
    var wanted = sessionStorage.getItem(STAGE_KEY);
    if (wanted && select.querySelector('option[value="' + wanted + '"]')) select.value = wanted;
    select.closest(".board-switcher").hidden = false;
    root.querySelector(".board").classList.add("board-one-stage");
    root.querySelectorAll("[data-column]").forEach(function (column) {
      column.classList.toggle("is-current", column.dataset.column === select.value);
    });
  }

  document.addEventListener("change", function (event) {
    if (!event.target.matches("[data-board-switcher]")) return;
    sessionStorage.setItem(STAGE_KEY, event.target.value);
    showStage();
  });
  document.addEventListener("DOMContentLoaded", showStage);
  document.addEventListener("htmx:afterSwap", showStage);

  document.addEventListener("drop", function (event) {
    var zone = dragged && event.target.closest && event.target.closest("[data-drop-stage]");
    if (!zone) return;
    event.preventDefault();
    var form = dragged.querySelector(".move-form");
    var select = form.querySelector("select[name=stage]");
    select.value = zone.dataset.dropStage;
    if (zone.dataset.kind === "lost") {
      // A lost deal needs a reason: reveal the field and let the user type it.
      var reason = form.querySelector("input[name=lost_reason]");
      reason.required = true;
      reason.focus();
      return;
    }
    form.requestSubmit();
  });
})();
