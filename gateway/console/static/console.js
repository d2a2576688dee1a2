// The console's own script (no inline script anywhere: the CSP forbids it).
// [data-verify-stream]: follows a server-sent verification and shows its progress.
"use strict";

function followVerification(box) {
  const bar = box.querySelector("progress");
  const status = box.querySelector("[data-status]");
  const source = new EventSource(box.dataset.verifyStream);
  source.addEventListener("progress", (event) => {
    const update = JSON.parse(event.data);
    bar.max = Math.max(update.total, 1);
    bar.value = update.checked;
    status.textContent = `${update.checked.toLocaleString()} of ${update.total.toLocaleString()} events checked`;
  });
  source.addEventListener("result", (event) => {
    source.close();
    const result = JSON.parse(event.data);
    bar.max = Math.max(result.length || 1, 1);
    bar.value = bar.max;
    box.classList.add(result.ok ? "verified" : "broken");
    if (result.ok) {
      status.textContent = `Verified: ${result.length.toLocaleString()} events, chain and checkpoints intact.`;
    } else {
      const reason = result.reason ? ` (${result.reason.code}: ${result.reason.message})` : "";
      status.textContent = `Broken at event ${result.first_bad_seq}${reason}.`;
      const link = box.querySelector("[data-first-bad]");
      if (link && result.first_bad_seq) {
        link.href = `/console/audit/events/${result.first_bad_seq}`;
        link.textContent = `Open event ${result.first_bad_seq}`;
        link.hidden = false;
      }
    }
  });
  source.addEventListener("error", (event) => {
    if (event.data) {
      const failure = JSON.parse(event.data);
      status.textContent = `Verification failed: ${failure.message}`;
    }
    source.close();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-verify-stream]").forEach(followVerification);
});
