// Vouchrs passkeys: the minimum JavaScript the WebAuthn API needs. The server sends options
// as JSON with base64url binary fields; the browser API wants ArrayBuffers, and back.
'use strict';
(() => {
  const script = document.currentScript;
  const prefix = script ? script.src.replace(/\/passkey\/passkey\.js.*$/, '').replace(/^[a-z]+:\/\/[^/]+/, '') : '/auth';

  const b64 = {
    encode(buffer) {
      const bytes = new Uint8Array(buffer);
      let text = '';
      for (const b of bytes) text += String.fromCharCode(b);
      return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    },
    decode(text) {
      const padded = text.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((text.length + 3) % 4);
      return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
    },
  };

  async function post(route, body) {
    const response = await fetch(`${prefix}/passkey/${route}`, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body ?? {}),
    });
    let json = {};
    try { json = await response.json(); } catch { /* not JSON: keep the status */ }
    if (!response.ok) {
      const error = new Error(json.message || `The server answered ${response.status}.`);
      error.code = json.error || 'http_error';
      throw error;
    }
    return json;
  }

  function creationOptions(options) {
    const pk = options.publicKey;
    pk.challenge = b64.decode(pk.challenge);
    pk.user.id = b64.decode(pk.user.id);
    for (const c of pk.excludeCredentials ?? []) c.id = b64.decode(c.id);
    return { publicKey: pk };
  }

  function requestOptions(options) {
    const pk = options.publicKey;
    pk.challenge = b64.decode(pk.challenge);
    for (const c of pk.allowCredentials ?? []) c.id = b64.decode(c.id);
    return { publicKey: pk };
  }

  function registrationJson(credential) {
    const r = credential.response;
    return {
      id: credential.id,
      rawId: b64.encode(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: b64.encode(r.attestationObject),
        clientDataJSON: b64.encode(r.clientDataJSON),
        transports: typeof r.getTransports === 'function' ? r.getTransports() : undefined,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }

  function assertionJson(credential) {
    const r = credential.response;
    return {
      id: credential.id,
      rawId: b64.encode(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: b64.encode(r.authenticatorData),
        clientDataJSON: b64.encode(r.clientDataJSON),
        signature: b64.encode(r.signature),
        userHandle: r.userHandle ? b64.encode(r.userHandle) : null,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }

  // A sentence a person can act on, for the errors browsers raise.
  function explain(error) {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      return 'This browser does not support passkeys. Use another way to sign in.';
    }
    switch (error && error.name) {
      case 'NotAllowedError':
        return 'The passkey request was cancelled or timed out, or no passkey is available on this device.';
      case 'InvalidStateError':
        return 'This authenticator already holds a passkey for this account.';
      case 'NotSupportedError':
        return 'This device has no authenticator that can hold a passkey.';
      case 'SecurityError':
        return 'Passkeys are not allowed on this address.';
      case 'AbortError':
        return 'The passkey request was cancelled.';
      default:
        return (error && error.message) || 'Something went wrong. Please try again.';
    }
  }

  function supported() {
    return Boolean(window.PublicKeyCredential && navigator.credentials);
  }

  // Obtains an assertion without finishing the login (the test harness also uses this).
  async function assertion(email, rd) {
    const options = await post('login/start', { email: email || undefined, rd: rd || undefined });
    const credential = await navigator.credentials.get(requestOptions(options));
    return assertionJson(credential);
  }

  async function login(email, rd) {
    if (!supported()) throw new Error(explain(null));
    const answer = await assertion(email, rd);
    const done = await post('login/finish', answer);
    window.location.assign(done.redirect || '/');
  }

  async function register(name, invitation) {
    if (!supported()) throw new Error(explain(null));
    const options = await post('register/start', { name, invitation: invitation || undefined });
    const credential = await navigator.credentials.create(creationOptions(options));
    const done = await post('register/finish', registrationJson(credential));
    window.location.assign(done.redirect);
  }

  function show(error) {
    const box = document.querySelector('[data-passkey-error]');
    if (!box) return;
    box.textContent = error instanceof DOMException ? explain(error) : (error?.message || explain(error));
    box.hidden = false;
    box.focus?.();
  }

  window.vouchrsPasskey = { login, register, assertion, explain };

  document.addEventListener('DOMContentLoaded', () => {
    const loginForm = document.querySelector('form[data-passkey-login]');
    if (loginForm) {
      loginForm.hidden = false;
      loginForm.addEventListener('submit', (event) => {
        event.preventDefault();
        const email = loginForm.querySelector('[name="email"]')?.value;
        login(email, loginForm.dataset.rd).catch((error) => show(error));
      });
    }
    const registerForm = document.querySelector('form[data-passkey-register]');
    if (registerForm) {
      registerForm.addEventListener('submit', (event) => {
        event.preventDefault();
        const name = registerForm.querySelector('[name="name"]')?.value ?? '';
        register(name, registerForm.dataset.invitation).catch((error) => show(error));
      });
    }
  });
})();
