// Tenantry console: passkey ceremonies (WebAuthn) and small conveniences. Everything else works
// without JavaScript. Every POST carries the page's CSRF token in the X-CSRF-Token header.
"use strict";

(() => {
  const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

  const passkeysSupported = () =>
    typeof window.PublicKeyCredential === "function" &&
    typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function" &&
    typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function";

  async function postJSON(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(body ?? {}),
    });
    let data = {};
    try {
      data = await response.json();
    } catch {
      // not JSON: fall through to the generic message
    }
    if (!response.ok) {
      throw new Error(data.message || "Something went wrong. Please reload the page and try again.");
    }
    return data;
  }

  function explain(error) {
    if (error && error.name === "NotAllowedError") {
      return "The passkey request was cancelled or timed out. Try again when you are ready.";
    }
    if (error && error.name === "InvalidStateError") {
      return "This device already holds a passkey for your account.";
    }
    return (error && error.message) || "Something went wrong. Please try again.";
  }

  function show(element, text) {
    if (!element) return;
    element.textContent = text;
    element.hidden = !text;
  }

  async function busy(button, work) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      await work();
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  // -- signing in with a passkey (on the sign-in page) ------------------------------------------
  function setUpPasskeySignIn(container) {
    const button = container.querySelector('[data-action="passkey-sign-in"]');
    const message = container.querySelector("[data-passkey-message]");
    container.hidden = false;
    button.addEventListener("click", () =>
      busy(button, async () => {
        show(message, "");
        try {
          const { challenge_id: challengeId, options } = await postJSON("/sign-in/passkey/options", {});
          const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
          const credential = await navigator.credentials.get({ publicKey });
          const done = await postJSON("/sign-in/passkey", { challenge_id: challengeId, credential: credential.toJSON() });
          window.location.assign(done.redirect);
        } catch (error) {
          show(message, explain(error));
        }
      }),
    );
  }

  // -- adding a passkey (on the account page) ----------------------------------------------------
  function setUpAddPasskey(form) {
    const button = form.querySelector('button[type="submit"]');
    const message = form.querySelector("[data-passkey-message]");
    const name = form.querySelector('input[name="name"]');
    form.hidden = false;
    document.querySelector("[data-passkey-unsupported]")?.setAttribute("hidden", "");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(button, async () => {
        show(message, "");
        try {
          const options = await postJSON("/account/passkeys/options", {});
          const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
          const credential = await navigator.credentials.create({ publicKey });
          const done = await postJSON("/account/passkeys", { credential: credential.toJSON(), name: name.value.trim() });
          window.location.assign(done.redirect);
        } catch (error) {
          show(message, explain(error));
        }
      });
    });
  }

  // -- copying recovery codes ----------------------------------------------------------------------
  function setUpCopy(button) {
    if (!navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(button.dataset.copy);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed: select the codes instead";
      }
    });
  }

  function start() {
    if (passkeysSupported()) {
      document.querySelectorAll("[data-passkey-sign-in]").forEach(setUpPasskeySignIn);
      document.querySelectorAll("[data-add-passkey]").forEach(setUpAddPasskey);
    }
    document.querySelectorAll("[data-copy]").forEach(setUpCopy);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
