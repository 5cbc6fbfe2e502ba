// Progressive enhancement for the code page: counts down the resend cooldown and enables the
// button when it opens. Without JavaScript the server enforces the same cooldown.
(function () {
  "use strict";
  var button = document.querySelector("[data-resend-wait]");
  if (!button) return;
  var hint = document.querySelector("[data-resend-hint]");
  var remaining = parseInt(button.getAttribute("data-resend-wait"), 10) || 0;
  function tick() {
    if (remaining <= 0) {
      button.disabled = false;
      if (hint) hint.textContent = "Didn't get it? Check your spam folder, or request a new code.";
      return;
    }
    if (hint) hint.textContent = "You can request a new code in " + remaining + (remaining === 1 ? " second." : " seconds.");
    remaining -= 1;
    setTimeout(tick, 1000);
  }
  tick();
})();
