// Latchkey JavaScript SDK: custom sign-up and sign-in screens on the `/v1/client` JSON API.
// One dependency-free ES module, no build step. Contract: docs/api.md.
//
//   import { Latchkey } from "https://accounts.example.com/static/latchkey.js";
//   const latchkey = await Latchkey.load();
//   await latchkey.signUp.create({ emailAddress: "jane@example.com" });
//   await latchkey.signUp.prepareEmailAddressVerification();
//   await latchkey.signUp.attemptEmailAddressVerification({ code: "123456" });
//   latchkey.user; // signed in
//
// JavaScript names are camelCase; the wire is snake_case. Keys are converted both ways, values
// never are (`strategy: "email_code"`, `unverifiedFields: ["email_address"]`).

const camel = (key) => key.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
const snake = (key) => key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());

/** Copies `value` with every object key renamed by `rename`, at any depth. */
function renameKeys(value, rename) {
  if (Array.isArray(value)) return value.map((v) => renameKeys(v, rename));
  if (value === null || typeof value !== "object") return value;
  const out = {};
  for (const [k, v] of Object.entries(value)) out[rename(k)] = renameKeys(v, rename);
  return out;
}

/** Seconds from a `Retry-After` header (delta-seconds or an HTTP date), or null. */
function retryAfterSeconds(header) {
  if (header == null || header === "") return null;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/**
 * Every failed call rejects with a LatchkeyError.
 *
 * - `errors`: the API's errors, camelCased: `[{code, message, longMessage, meta}]`. Show
 *   `errors[0].message` to the user; branch on `errors[0].code` (e.g. `"form_code_incorrect"`,
 *   `"verification_expired"`, `"too_many_requests"`, or `"network_error"` when the server could
 *   not be reached).
 * - `status`: the HTTP status, or null when no response arrived.
 * - `retryAfter`: seconds from the `Retry-After` header (429, 503), or null.
 */
export class LatchkeyError extends Error {
  constructor(errors, status = null, retryAfter = null) {
    super(errors[0]?.message || "The request failed.");
    this.name = "LatchkeyError";
    this.errors = errors;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** Replaces a resource's fields with the server's (camelCased), keeping its methods. */
function replaceFields(target, fields) {
  for (const key of Object.keys(target)) delete target[key];
  Object.assign(target, fields);
  return target;
}

/**
 * The current sign-up (`latchkey.signUp`). Before `create()`, `id` and `status` are null; after
 * any call it carries the server's SignUp fields: `id`, `status` (`"missing_requirements"`,
 * `"complete"`, `"abandoned"`), `requiredFields`, `missingFields`, `unverifiedFields`,
 * `emailAddress`, `phoneNumber`, `verifications.emailAddress` / `.phoneNumber` (`status`,
 * `attempts`, `attemptsRemaining`, `expireAt`, `resendAvailableAt`), `createdUserId`,
 * `createdSessionId`. Each method resolves to this same object, updated.
 */
export class SignUp {
  #api;

  /** Made by {@link Latchkey}; use `latchkey.signUp`. */
  constructor(api) {
    this.#api = api;
    replaceFields(this, { id: null, status: null });
  }

  /**
   * Starts a new sign-up with the person's identifier(s). No code is sent yet.
   * @param {{emailAddress?: string, phoneNumber?: string}} params
   * @returns {Promise<SignUp>}
   */
  create({ emailAddress, phoneNumber } = {}) {
    return this.#call("/v1/client/sign_ups", { emailAddress, phoneNumber });
  }

  /** Sends a code to the sign-up's email address. @returns {Promise<SignUp>} */
  prepareEmailAddressVerification() {
    return this.#call(this.#path("prepare_verification"), { strategy: "email_code" });
  }

  /**
   * Checks the code sent by email. Resolves with `status: "complete"` (and `latchkey.user` set)
   * once every identifier is verified.
   * @param {{code: string}} params
   * @returns {Promise<SignUp>}
   */
  attemptEmailAddressVerification({ code } = {}) {
    return this.#call(this.#path("attempt_verification"), { strategy: "email_code", code });
  }

  /** Sends a code by SMS to the sign-up's phone number. @returns {Promise<SignUp>} */
  preparePhoneNumberVerification() {
    return this.#call(this.#path("prepare_verification"), { strategy: "phone_code" });
  }

  /**
   * Checks the code sent by SMS; like {@link SignUp#attemptEmailAddressVerification}.
   * @param {{code: string}} params
   * @returns {Promise<SignUp>}
   */
  attemptPhoneNumberVerification({ code } = {}) {
    return this.#call(this.#path("attempt_verification"), { strategy: "phone_code", code });
  }

  #path(action) {
    return `/v1/client/sign_ups/${encodeURIComponent(this.id ?? "")}/${action}`;
  }

  async #call(path, body) {
    replaceFields(this, await this.#api.request("POST", path, body));
    if (this.status === "complete") await this.#api.refresh();
    return this;
  }
}

/**
 * The current sign-in (`latchkey.signIn`). Before `create()`, `id` and `status` are null; after
 * any call it carries the server's SignIn fields: `id`, `status` (`"needs_identifier"` when
 * created without one, `"needs_first_factor"`, `"complete"`, `"abandoned"`), `identifier`, `supportedFirstFactors` (`[{strategy,
 * emailAddressId | phoneNumberId, safeIdentifier}]`), `firstFactorVerification`,
 * `createdSessionId`. Each method resolves to this same object, updated.
 */
export class SignIn {
  #api;

  /** Made by {@link Latchkey}; use `latchkey.signIn`. */
  constructor(api) {
    this.#api = api;
    replaceFields(this, { id: null, status: null });
  }

  /**
   * Starts a new sign-in for an email address or phone number. No code is sent yet; pick one of
   * `supportedFirstFactors` for {@link SignIn#prepareFirstFactor}. Without an identifier the
   * sign-in has `status: "needs_identifier"` (and no `id`): call `create` again with one.
   * @param {{identifier?: string}} params
   * @returns {Promise<SignIn>}
   */
  create({ identifier } = {}) {
    return this.#call("/v1/client/sign_ins", identifier ? { identifier } : {});
  }

  /**
   * Sends a code to one of the account's identifiers.
   * @param {{strategy: "email_code" | "phone_code", emailAddressId?: string, phoneNumberId?: string}} params
   * @returns {Promise<SignIn>}
   */
  async prepareFirstFactor({ strategy, emailAddressId, phoneNumberId } = {}) {
    return this.#call(this.#path("prepare_first_factor"), {
      strategy,
      emailAddressId,
      phoneNumberId,
    });
  }

  /**
   * Checks the code. Resolves with `status: "complete"` (and `latchkey.user` set) when it is right.
   * @param {{strategy: "email_code" | "phone_code", code: string}} params
   * @returns {Promise<SignIn>}
   */
  async attemptFirstFactor({ strategy, code } = {}) {
    return this.#call(this.#path("attempt_first_factor"), { strategy, code });
  }

  #path(action) {
    if (this.status === "needs_identifier" || !this.id) {
      throw new LatchkeyError([
        {
          code: "sign_in_needs_identifier",
          message: "Enter your email address or phone number first.",
          longMessage: "Call signIn.create({ identifier }) before preparing or attempting a factor.",
          meta: {},
        },
      ]);
    }
    return `/v1/client/sign_ins/${encodeURIComponent(this.id)}/${action}`;
  }

  async #call(path, body) {
    replaceFields(this, await this.#api.request("POST", path, body));
    if (this.status === "complete") await this.#api.refresh();
    return this;
  }
}

/** A Latchkey client for one browser, talking to one Latchkey instance. */
export class Latchkey {
  #frontendApi;

  /**
   * Connects to a Latchkey instance and reads who is signed in (`GET /v1/client`).
   * @param {{frontendApi?: string}} [options] the instance's origin, e.g.
   *   `"https://accounts.example.com"`; defaults to the origin this script was loaded from.
   * @returns {Promise<Latchkey>}
   */
  static async load({ frontendApi } = {}) {
    const latchkey = new Latchkey(frontendApi ?? new URL(import.meta.url).origin);
    await latchkey.#refresh();
    return latchkey;
  }

  /** Prefer {@link Latchkey.load}, which also reads the current session. */
  constructor(frontendApi) {
    this.#frontendApi = String(frontendApi).replace(/\/+$/, "");
    const api = {
      request: (method, path, body) => this.#request(method, path, body),
      refresh: () => this.#refresh(),
    };
    /** @type {SignUp} */
    this.signUp = new SignUp(api);
    /** @type {SignIn} */
    this.signIn = new SignIn(api);
    /** The Client object of the last `GET /v1/client` (camelCased), or null. */
    this.client = null;
    /** @type {null | {id: string, status: string, userId: string, expireAt: number}} */
    this.session = null;
    /** The signed-in user (`id`, `firstName`, `lastName`, `emailAddresses`, `phoneNumbers`, …,
     * with `update`, `createEmailAddress`, `createPhoneNumber`, `getSessions`, `reverify` and
     * `delete`), or null. */
    this.user = null;
  }

  /**
   * The URL of the hosted sign-in page that comes back to `redirectUrl` (default: the current
   * page) once the person is signed in. `initialValues` prefills the form (`emailAddress`,
   * `phoneNumber` or `identifier`).
   * @param {{redirectUrl?: string, initialValues?: {emailAddress?: string, phoneNumber?: string, identifier?: string}}} [options]
   * @returns {string}
   */
  buildSignInUrl(options = {}) {
    return this.#hostedUrl("/sign-in", options);
  }

  /** Like {@link Latchkey#buildSignInUrl}, for the hosted sign-up page. @returns {string} */
  buildSignUpUrl(options = {}) {
    return this.#hostedUrl("/sign-up", options);
  }

  /** The hosted profile page, with a way back to `redirectUrl` (default: the current page). */
  buildUserProfileUrl(options = {}) {
    return this.#hostedUrl("/user", options);
  }

  /** Sends the browser to the hosted sign-in page (see {@link Latchkey#buildSignInUrl}). */
  redirectToSignIn(options = {}) {
    window.location.assign(this.buildSignInUrl(options));
  }

  /** Sends the browser to the hosted sign-up page. */
  redirectToSignUp(options = {}) {
    window.location.assign(this.buildSignUpUrl(options));
  }

  /** Sends the browser to the hosted profile page. */
  redirectToUserProfile(options = {}) {
    window.location.assign(this.buildUserProfileUrl(options));
  }

  /** `path` on this instance with `redirect_url` and any prefilled values. */
  #hostedUrl(path, { redirectUrl, initialValues } = {}) {
    const url = new URL(path, this.#frontendApi + "/");
    const back = redirectUrl ?? (typeof window === "undefined" ? null : window.location.href);
    if (back) url.searchParams.set("redirect_url", String(back));
    const prefill = {
      emailAddress: "email_address",
      phoneNumber: "phone_number",
      identifier: "identifier",
    };
    for (const [key, param] of Object.entries(prefill)) {
      const value = initialValues?.[key];
      if (value) url.searchParams.set(param, String(value));
    }
    return url.toString();
  }

  /** Ends the current session, then clears `session` and `user`. @returns {Promise<void>} */
  async signOut() {
    if (this.session) {
      await this.#request("DELETE", `/v1/client/sessions/${encodeURIComponent(this.session.id)}`);
    }
    await this.#refresh();
  }

  /** Re-reads the client, its session and its user. */
  async #refresh() {
    const client = await this.#request("GET", "/v1/client");
    const sessions = client.sessions ?? [];
    const active =
      sessions.find((s) => s.id === client.lastActiveSessionId) ?? sessions[0] ?? null;
    this.client = client;
    this.session = active && {
      id: active.id,
      status: active.status,
      userId: active.userId,
      expireAt: active.expireAt,
      /**
       * A session token for your backend: a JWT valid for 60 seconds (verify it against
       * `/.well-known/jwks.json`, or with `POST /v1/sessions/verify`). A new one per call.
       * @returns {Promise<string>}
       */
      getToken: async () => {
        const token = await this.#request(
          "POST",
          `/v1/client/sessions/${encodeURIComponent(active.id)}/tokens`,
        );
        return token.jwt;
      },
    };
    this.user = client.user ? this.#userOf(client.user) : null;
  }

  /** The user object with its methods (the profile: docs/api.md, "/v1/me"). */
  #userOf(user) {
    const request = (method, path, body) => this.#request(method, path, body);
    const refreshed = async () => {
      await this.#refresh();
      return this.user;
    };
    /** An email address or phone number with its methods; `collection` names its kind. */
    const identifier = (collection, object) => {
      const path = `/v1/me/${collection}/${encodeURIComponent(object.id)}`;
      return {
        ...object,
        /** Sends its code (again, after the resend cooldown). */
        prepareVerification: async () =>
          identifier(collection, await request("POST", `${path}/prepare_verification`)),
        /** Checks its code; when right, it joins the account (and `latchkey.user` is re-read). */
        attemptVerification: async ({ code } = {}) => {
          const verified = await request("POST", `${path}/attempt_verification`, { code });
          await this.#refresh();
          return identifier(collection, verified);
        },
        /** Removes it from the account (needs a recent code: `session_reverification_required`). */
        destroy: async () => {
          await request("DELETE", path);
          await this.#refresh();
        },
      };
    };
    return {
      ...user,
      emailAddresses: (user.emailAddresses ?? []).map((e) => identifier("email_addresses", e)),
      phoneNumbers: (user.phoneNumbers ?? []).map((p) => identifier("phone_numbers", p)),
      /**
       * Changes the signed-in person's name (`PATCH /v1/me`): a field left out stays as it
       * is, `""` clears it; `primaryEmailAddressId` / `primaryPhoneNumberId` change the
       * primary one (needs a recent code). Resolves to the updated `latchkey.user`.
       * @param {{firstName?: string, lastName?: string, primaryEmailAddressId?: string, primaryPhoneNumberId?: string}} fields
       */
      update: async (fields = {}) => {
        await request("PATCH", "/v1/me", fields);
        return refreshed();
      },
      /** Adds an email address, unverified: then `prepareVerification()` and `attemptVerification({code})`. */
      createEmailAddress: async ({ email } = {}) =>
        identifier("email_addresses", await request("POST", "/v1/me/email_addresses", { emailAddress: email })),
      /** Adds a phone number, unverified (as {@link createEmailAddress}). */
      createPhoneNumber: async ({ phoneNumber } = {}) =>
        identifier("phone_numbers", await request("POST", "/v1/me/phone_numbers", { phoneNumber })),
      /** The person's sessions in use (their devices), each with `revoke()`. */
      getSessions: async () =>
        (await request("GET", "/v1/me/sessions")).map((session) => ({
          ...session,
          /** Signs that device out (another device's needs a recent code). */
          revoke: async () => {
            const revoked = await request(
              "POST",
              `/v1/me/sessions/${encodeURIComponent(session.id)}/revoke`,
            );
            if (session.current) await this.#refresh();
            return revoked;
          },
        })),
      /**
       * A fresh code for the changes that need one (`session_reverification_required`): sent
       * to `identifierId` or the primary email address; then `attemptVerification({code})`.
       */
      reverify: async ({ identifierId } = {}) => {
        const started = await request("POST", "/v1/me/reverification", { identifierId });
        return {
          ...started,
          attemptVerification: async ({ code } = {}) =>
            request("POST", `/v1/me/reverification/${encodeURIComponent(started.id)}/attempt`, {
              code,
            }),
        };
      },
      /** Deletes the account at once (needs a recent code), then clears `session` and `user`. */
      delete: async () => {
        await request("DELETE", "/v1/me");
        await this.#refresh();
      },
    };
  }

  /** One API call: resolves to the camelCased body or rejects with a LatchkeyError. */
  async #request(method, path, body) {
    const init = {
      method,
      credentials: "include",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
    };
    // Unsafe methods always carry a JSON object; GET cannot carry a body.
    if (method !== "GET") init.body = JSON.stringify(renameKeys(body ?? {}, snake));
    let response;
    try {
      response = await fetch(this.#frontendApi + path, init);
    } catch (e) {
      throw new LatchkeyError([
        {
          code: "network_error",
          message: "We could not reach the server. Check your connection and try again.",
          longMessage: String(e?.message ?? e),
          meta: {},
        },
      ]);
    }
    let json = null;
    try {
      json = await response.json();
    } catch {
      // Not JSON (e.g. a proxy's error page): reported below.
    }
    if (response.ok && json !== null) return renameKeys(json, camel);
    const retryAfter = retryAfterSeconds(response.headers.get("Retry-After"));
    const errors = Array.isArray(json?.errors)
      ? renameKeys(json.errors, camel)
      : [
          {
            code: "unexpected_response",
            message: "Something went wrong. Try again in a moment.",
            longMessage: `${method} ${path} answered ${response.status} without a JSON body.`,
            meta: {},
          },
        ];
    throw new LatchkeyError(errors, response.status, retryAfter);
  }
}

export default Latchkey;
