// CronFlow dashboard: small progressive enhancements. Every page works without it.
"use strict";

// Times: add the browser's own zone to the tooltip of every <time>.
for (const t of document.querySelectorAll("time[datetime]")) {
  const d = new Date(t.getAttribute("datetime"));
  if (!isNaN(d)) {
    t.title = `${t.title} · your browser: ${d.toLocaleString()}`;
  }
}

// Copy buttons: <button data-copy="input-id">.
for (const b of document.querySelectorAll("button[data-copy]")) {
  b.addEventListener("click", async () => {
    const field = document.getElementById(b.dataset.copy);
    if (!field) return;
    try {
      await navigator.clipboard.writeText(field.value);
    } catch {
      field.select();
      document.execCommand("copy");
    }
    b.textContent = "Copied";
    setTimeout(() => { b.textContent = "Copy"; }, 2000);
  });
}

// Webhook Activity: poll for deliveries newer than the newest shown; offer them with
// "N new, click to show" instead of moving the list under the reader. Pausable; paused
// while the tab is hidden.
const live = document.getElementById("live");
if (live) {
  const show = document.getElementById("show-new");
  const toggle = document.getElementById("live-toggle");
  let paused = false;
  toggle.hidden = false;
  toggle.addEventListener("click", () => {
    paused = !paused;
    toggle.setAttribute("aria-pressed", String(paused));
    toggle.textContent = paused ? "Resume live refresh" : "Pause live refresh";
  });
  show.addEventListener("click", () => location.reload());
  const poll = async () => {
    if (paused || document.hidden) return;
    try {
      const r = await fetch(live.dataset.newer, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) return;
      const { count, capped } = await r.json();
      if (count > 0) {
        show.textContent = `${count}${capped ? "+" : ""} new — click to show`;
        show.hidden = false;
      }
    } catch {
      // The next poll tries again.
    }
  };
  setInterval(poll, 3000);
}
