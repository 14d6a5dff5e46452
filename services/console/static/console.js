// Akece Webhooks console: copy buttons, the Webhooks page's live columns, replay progress.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      const note = button.parentElement.querySelector(".copied");
      try {
        await navigator.clipboard.writeText(text);
        note.textContent = "Copied";
      } catch {
        getSelection().selectAllChildren(document.getElementById(button.dataset.copy));
        note.textContent = "Selected: press Ctrl+C to copy";
      }
    });
  }
  const health = document.querySelector("[data-health-src]");
  if (health) {
    fetch(health.dataset.healthSrc, {credentials: "same-origin"})
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((data) => {
        for (const cell of health.querySelectorAll("[data-health]")) {
          const item = data.webhooks[cell.dataset.health] || {};
          if (cell.dataset.field === "circuit") {
            cell.textContent = item.circuit || "closed";
            cell.className = "badge " + (item.circuit === "open" ? "bad" : "ok");
          } else {
            const last = item.last;
            cell.textContent = last ? last.text : "none yet";
            cell.className = last ? "badge " + (last.outcome === "success" ? "ok" : "bad") : "";
            if (last && last.time) cell.title = last.time;
          }
        }
      })
      .catch(() => {
        for (const cell of health.querySelectorAll("[data-health]")) cell.textContent = "unavailable";
      });
  }
  const live = document.querySelector("[data-refresh]");
  if (live) setTimeout(() => location.reload(), 1000 * Number(live.dataset.refresh));
});
