// The /examples/custom-flow page: a complete custom sign-up and sign-in on the Latchkey SDK.
// Identifier → "Send code" → code → signed in. Read it as a template for your own screens.
import { Latchkey } from "./latchkey.js";

const $ = (id) => document.getElementById(id);
const ui = {
  modeSignUp: $("mode-sign-up"),
  modeSignIn: $("mode-sign-in"),
  heading: $("heading"),
  error: $("error"),
  status: $("status"),
  identifierForm: $("identifier-form"),
  identifierLabel: $("identifier-label"),
  identifier: $("identifier"),
  send: $("send"),
  codeForm: $("code-form"),
  sentTo: $("sent-to"),
  code: $("code"),
  verify: $("verify"),
  resend: $("resend"),
  restart: $("restart"),
  signedIn: $("signed-in"),
  user: $("user"),
  signOut: $("sign-out"),
  hosted: $("hosted"),
  hostedSignIn: $("hosted-sign-in"),
  hostedSignUp: $("hosted-sign-up"),
  manageAccount: $("manage-account"),
  addEmailForm: $("add-email-form"),
  newEmail: $("new-email"),
  profileCodeForm: $("profile-code-form"),
  profileCodeFor: $("profile-code-for"),
  profileCode: $("profile-code"),
  devices: $("devices"),
};

/** What the profile's code field verifies: `{label, verify(code)}`, or null. */
let profileCode = null;

function askProfileCode(label, verify) {
  profileCode = { verify };
  ui.profileCodeFor.textContent = label;
  ui.profileCode.value = "";
  ui.profileCodeForm.hidden = false;
  ui.profileCode.focus();
}

/**
 * Runs a change that may need a fresh code: on `session_reverification_required` it asks for
 * one (sent by `user.reverify()`) and then runs the change again.
 */
async function withReverification(change) {
  try {
    await change();
  } catch (err) {
    if (err?.errors?.[0]?.code !== "session_reverification_required") throw err;
    const reverification = await latchkey.user.reverify();
    askProfileCode(`Confirm it is you: enter the code sent to ${reverification.safeIdentifier}.`, async (code) => {
      await reverification.attemptVerification({ code });
      await change();
    });
  }
}

async function renderDevices() {
  const sessions = await latchkey.user.getSessions();
  ui.devices.replaceChildren(
    ...sessions.map((s) => {
      const li = document.createElement("li");
      li.textContent = `${s.latestActivity.device}${s.current ? " (this device)" : ""} `;
      if (!s.current) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "link";
        button.textContent = "Sign out";
        button.addEventListener("click", () =>
          busy(() => withReverification(async () => {
            await s.revoke();
            await renderDevices();
          })),
        );
        li.append(button);
      }
      return li;
    }),
  );
}

const FIELD_NAMES = { email_address: "email address", phone_number: "phone number" };
const isEmail = (value) => value.includes("@");

let latchkey;
let mode = "sign-up";
/** Sign-up: the identifiers collected so far, e.g. `{phoneNumber}` while the email is missing. */
let collected = {};
/** The identifier being verified: a sign-up field name, or a sign-in first factor. */
let pending = null;

function showError(err) {
  const first = err?.errors?.[0];
  ui.error.textContent = first?.message ?? String(err?.message ?? err);
  ui.error.dataset.code = first?.code ?? "";
  if (err?.retryAfter) ui.error.textContent += ` (try again in ${err.retryAfter} s)`;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
  delete ui.error.dataset.code;
}

function setStatus(text) {
  ui.status.textContent = text;
}

/** Disables the buttons while a call is in flight; shows its error inline. */
async function busy(action) {
  clearError();
  const buttons = document.querySelectorAll("main button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    await action();
  } catch (err) {
    showError(err);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function showIdentifierStep(label) {
  ui.identifierLabel.textContent = label ?? "Email address or phone number";
  ui.identifierForm.hidden = false;
  ui.codeForm.hidden = true;
  ui.identifier.focus();
}

function showCodeStep(destination) {
  ui.sentTo.textContent = `We sent a verification code to ${destination}.`;
  ui.code.value = "";
  ui.identifierForm.hidden = true;
  ui.codeForm.hidden = false;
  ui.code.focus();
}

function setMode(next) {
  mode = next;
  collected = {};
  pending = null;
  clearError();
  ui.heading.textContent = mode === "sign-up" ? "Create your account" : "Sign in";
  ui.modeSignUp.setAttribute("aria-pressed", String(mode === "sign-up"));
  ui.modeSignIn.setAttribute("aria-pressed", String(mode === "sign-in"));
  showIdentifierStep();
}

function render() {
  const user = latchkey.user;
  ui.signedIn.hidden = !user;
  ui.hosted.hidden = Boolean(user);
  document.querySelector(".modes").hidden = Boolean(user);
  if (user) {
    const identifiers = [
      ...(user.emailAddresses ?? []).map((e) => e.emailAddress),
      ...(user.phoneNumbers ?? []).map((p) => p.phoneNumber),
    ];
    ui.user.textContent = identifiers.join(", ");
    ui.heading.textContent = "You are signed in";
    ui.identifierForm.hidden = true;
    ui.codeForm.hidden = true;
    setStatus("Signed in.");
    renderDevices().catch(showError);
  } else {
    ui.user.textContent = "";
  }
}

// Sign-up: create with what was typed; ask for any identifier the instance also requires;
// then verify each unverified one in turn.
async function signUpSend(value) {
  collected[isEmail(value) ? "emailAddress" : "phoneNumber"] = value;
  const signUp = await latchkey.signUp.create(collected);
  const missing = signUp.missingFields ?? [];
  if (missing.length > 0) {
    ui.identifier.value = "";
    showIdentifierStep(`Your ${FIELD_NAMES[missing[0]] ?? missing[0]} too`);
    setStatus(`This site also needs your ${FIELD_NAMES[missing[0]] ?? missing[0]}.`);
    return;
  }
  await signUpPrepareNext();
}

async function signUpPrepareNext() {
  const signUp = latchkey.signUp;
  pending = signUp.unverifiedFields[0];
  if (pending === "phone_number") {
    await signUp.preparePhoneNumberVerification();
    showCodeStep(signUp.phoneNumber);
  } else {
    await signUp.prepareEmailAddressVerification();
    showCodeStep(signUp.emailAddress);
  }
  setStatus("Code sent.");
}

async function signUpVerify(code) {
  const signUp = latchkey.signUp;
  if (pending === "phone_number") await signUp.attemptPhoneNumberVerification({ code });
  else await signUp.attemptEmailAddressVerification({ code });
  if (signUp.status !== "complete" && (signUp.unverifiedFields ?? []).length > 0) {
    await signUpPrepareNext();
  }
}

// Sign-in: create with the identifier, then send a code to the factor matching what was typed.
async function signInSend(value) {
  const signIn = await latchkey.signIn.create({ identifier: value });
  const wanted = isEmail(value) ? "email_code" : "phone_code";
  const factors = signIn.supportedFirstFactors ?? [];
  pending = factors.find((f) => f.strategy === wanted) ?? factors[0];
  await signIn.prepareFirstFactor(pending);
  showCodeStep(pending.safeIdentifier ?? value);
  setStatus("Code sent.");
}

async function signInVerify(code) {
  await latchkey.signIn.attemptFirstFactor({ strategy: pending.strategy, code });
}

ui.identifierForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const value = ui.identifier.value.trim();
  busy(async () => {
    if (mode === "sign-up") await signUpSend(value);
    else await signInSend(value);
  });
});

ui.codeForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const code = ui.code.value.trim();
  busy(async () => {
    if (mode === "sign-up") await signUpVerify(code);
    else await signInVerify(code);
    if (latchkey.user) render();
  });
});

ui.resend.addEventListener("click", () =>
  busy(async () => {
    if (mode === "sign-up") await signUpPrepareNext();
    else await latchkey.signIn.prepareFirstFactor(pending);
    setStatus("A new code is on its way.");
  }),
);

ui.restart.addEventListener("click", () => setMode(mode));
ui.modeSignUp.addEventListener("click", () => setMode("sign-up"));
ui.modeSignIn.addEventListener("click", () => setMode("sign-in"));

// The hosted pages, for comparison: they come back to this page (`redirect_url`) when done.
ui.hostedSignIn.addEventListener("click", () => latchkey.redirectToSignIn());
ui.hostedSignUp.addEventListener("click", () => latchkey.redirectToSignUp());
ui.manageAccount.addEventListener("click", () => latchkey.redirectToUserProfile());

// The profile: add an email address (create → prepare → attempt).
ui.addEmailForm.addEventListener("submit", (e) => {
  e.preventDefault();
  busy(async () => {
    const added = await latchkey.user.createEmailAddress({ email: ui.newEmail.value });
    await added.prepareVerification();
    askProfileCode(`We sent a code to ${added.emailAddress}.`, async (code) => {
      await added.attemptVerification({ code });
      ui.newEmail.value = "";
      render();
    });
  });
});

ui.profileCodeForm.addEventListener("submit", (e) => {
  e.preventDefault();
  busy(async () => {
    const pendingCode = profileCode;
    await pendingCode.verify(ui.profileCode.value);
    ui.profileCodeForm.hidden = true;
    profileCode = null;
  });
});

ui.signOut.addEventListener("click", () =>
  busy(async () => {
    await latchkey.signOut();
    ui.identifier.value = "";
    setMode("sign-in");
    render();
    setStatus("Signed out.");
  }),
);

try {
  latchkey = await Latchkey.load();
  setMode("sign-up");
  setStatus("Ready.");
  render();
  ui.send.disabled = false;
  ui.verify.disabled = false;
  document.body.dataset.ready = "true";
} catch (err) {
  showError(err);
  setStatus("Could not load.");
}
