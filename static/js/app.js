// Small progressive enhancements; the pages work without them. No inline scripts (CSP).
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.requestSubmit();
    }
  });

  // Type-ahead pickers (templates/crm/_combobox.html): a WAI-ARIA combobox whose options htmx fetches as
  // the user types. The arrow keys move through the options, Enter or a click picks one, Escape closes
  // the list. Typed text is not a choice: the hidden input holds an id only once an option is picked.
  function parts(element) {
    var root = element.closest && element.closest("[data-combobox]");
    if (!root) return null;
    return {
      input: root.querySelector("[data-combobox-search]"),
      value: root.querySelector("[data-combobox-value]"),
      list: root.querySelector("[role=listbox]"),
    };
  }

  function choices(box) {
    return Array.prototype.slice.call(box.list.querySelectorAll("[role=option]:not([aria-disabled=true])"));
  }

  function setOpen(box, open) {
    box.list.hidden = !open;
    box.input.setAttribute("aria-expanded", open ? "true" : "false");
    if (!open) box.input.removeAttribute("aria-activedescendant");
  }

  function highlight(box, option) {
    box.list.querySelectorAll("[role=option]").forEach(function (each) {
      each.setAttribute("aria-selected", each === option ? "true" : "false");
    });
    if (option) {
      box.input.setAttribute("aria-activedescendant", option.id);
      option.scrollIntoView({ block: "nearest" });
    } else {
      box.input.removeAttribute("aria-activedescendant");
    }
  }

  function pick(box, option) {
    box.value.value = option.dataset.value;
    box.input.value = option.dataset.label;
    setOpen(box, false);
    // Forms that react as you type (list filters) or on change (campaign preview) both hear of it.
    box.value.dispatchEvent(new Event("change", { bubbles: true }));
    box.value.dispatchEvent(new Event("input", { bubbles: true }));
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var box = parts(event.target);
    if (!box || event.target !== box.list) return;
    setOpen(box, document.activeElement === box.input && box.list.children.length > 0);
    highlight(box, null);
  });

  document.addEventListener("input", function (event) {
    var box = event.target.matches && event.target.matches("[data-combobox-search]") && parts(event.target);
    if (box) box.value.value = "";
  });

  document.addEventListener("keydown", function (event) {
    var box = event.target.matches && event.target.matches("[data-combobox-search]") && parts(event.target);
    if (!box) return;
    var options = choices(box);
    var current = box.list.querySelector("[aria-selected=true]");
    var index = options.indexOf(current);
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!options.length) return;
      event.preventDefault();
      setOpen(box, true);
      var next = event.key === "ArrowDown" ? Math.min(index + 1, options.length - 1) : Math.max(index - 1, 0);
      highlight(box, options[next]);
    } else if (event.key === "Enter" && !box.list.hidden) {
      var chosen = current || (options.length === 1 ? options[0] : null);
      if (chosen) {
        event.preventDefault();
        pick(box, chosen);
      }
    } else if (event.key === "Escape" && !box.list.hidden) {
      event.preventDefault();
      setOpen(box, false);
    }
  });

  // mousedown, not click: it comes before the text box loses focus (which closes the list).
  document.addEventListener("mousedown", function (event) {
    var option = event.target.closest && event.target.closest("[data-combobox] [role=option]");
    if (!option || option.getAttribute("aria-disabled") === "true") return;
    event.preventDefault();
    pick(parts(option), option);
  });

  document.addEventListener("focusout", function (event) {
    var box = event.target.matches && event.target.matches("[data-combobox-search]") && parts(event.target);
    if (box) setOpen(box, false);
  });
})();
