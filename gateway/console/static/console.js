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

// [data-job-events]: a job's events, live from the console's server-sent stream, oldest
// first; the stream ends with an `end` event once the job has finished.
function followJobEvents(list) {
  const status = document.querySelector("[data-job-events-status]");
  const source = new EventSource(list.dataset.jobEvents);
  source.addEventListener("fine_tuning.job.event", (message) => {
    const event = JSON.parse(message.data);
    const item = document.createElement("li");
    item.className = `level-${event.level}`;
    const at = new Date(event.created_at * 1000).toISOString().replace("T", " ").slice(0, 19);
    const time = document.createElement("time");
    time.dateTime = new Date(event.created_at * 1000).toISOString();
    time.textContent = at;
    item.append(time, ` ${event.message}`);
    list.append(item);
  });
  source.addEventListener("end", (message) => {
    source.close();
    const end = JSON.parse(message.data);
    if (status) status.textContent = `The job is ${end.status}; no more events will come.`;
  });
  source.addEventListener("error", () => {
    if (status && source.readyState === EventSource.CLOSED) {
      status.textContent = "The event stream closed; reload the page to follow the job again.";
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-job-events]").forEach(followJobEvents);
});

// A form sent by htmx that comes back with its errors (422) is still shown, its errors
// beside the fields ([data-swap-errors] marks the forms that answer so).
document.addEventListener("htmx:beforeSwap", (event) => {
  const target = event.detail.target;
  if (event.detail.xhr.status === 422 && target && target.closest("[data-swap-errors]")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
