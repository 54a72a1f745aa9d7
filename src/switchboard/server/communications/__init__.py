"""The Communications API v2: communications rendered from stable templates and sent through SMS,
email and WhatsApp; previews; QR images; phone number validation; short URLs.

Decisions where the documentation is silent (each module's docstring has the details):

- Send answers 202 when every channel was accepted (ACCEPTED or SCHEDULED), 206 when any
  channel failed (each failure in its channel's `error`, even when all failed: consent or a
  missing template is not a malformed request), 400 when the request itself is invalid, and
  then nothing is stored. Preview answers 200, or 206 when a channel cannot render.
- Recipients: `smsInput`/`whatsAppInput` take `phoneNumber` (E.164) or `countryCode` +
  `terminatingNumber`; `emailInput` takes `to`, `cc`, `bcc`, `replyTo`. Without `channels`, a
  send uses every channel with a stable template whose input is given.
- Languages: requested, its primary subtag, the org's default (`SWITCHBOARD_ORG_DEFAULT_LANGUAGES`
  / `SWITCHBOARD_DEFAULT_LANGUAGE`), then `en`; each channel states the language it used.
- Consent: requirement OPT_OUT, sender id = the template's senderInfo, per channel destination
  (the email's `to`). A fixed line fails the SMS and WhatsApp channels at once.
- Delivery windows: the recipient's zones from the number (all of them must be inside the window;
  UTC for email-only communications); a past `scheduledTime` means now. Waiting is SCHEDULED,
  handed to a provider when due by the delivery engine (delivery/engine.py), across restarts.
- Masking: sensitive arguments are `****` in everything stored, returned, listed, previewed or
  logged; the real rendering exists only sealed (Fernet) until the provider hand-off.
- Attachments are Attachment-type arguments (the name is the file name), Images are inline email
  parts, the QrCode argument (else `qrArgument`) is a QR PNG: inline in email, a public image
  link elsewhere. File contents travel sealed with the email and are not kept after it.
- Short links: an SMS template's non-sensitive Link arguments become `/s/{code}` links tied to
  the communication; clicks are `short_url.clicked` events.
"""
