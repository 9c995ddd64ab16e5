// Test support, not part of keel: starts s3rver (an S3-compatible server on the local file
// system) on 127.0.0.1 for tests/support/s3rver.cc, in front of it a check of AWS Signature
// Version 4 as S3 does it, and an admin route that injects faults.
//
//   node s3rver_launch.js --module <s3rver package dir> --directory <data dir> --port <port>
//       --region <region> --access-key-id <id> --secret-access-key <secret>
//       [--bucket <name>]...
//
// Prints "keel-s3rver listening on 127.0.0.1:<port>" on stdout once the buckets exist and the
// port is bound; exits with status 1 and a message on stderr when it cannot start (status 2 for
// bad arguments).
//
// Every request goes through, in this order:
// 1. /__keel/... at host 127.0.0.1 (path style, where no bucket name can start with '_'): the
//    admin route, answered here and never counted, delayed or failed. Loopback peers only, no
//    authentication:
//      /__keel/fail?status=503&code=SlowDown[&count=N]  answer the next N requests (every
//          request without count) with that status and an S3 error document of that code;
//      /__keel/delay?ms=3000  hold every answer that long before handling the request;
//      /__keel/reset          no faults, no delay;
//      /__keel/stats          nothing changed.
//    Each answers 200 with JSON: {"requests":N (counted since the start), and the faults armed},
//    or 400 with {"error":"..."} for bad parameters.
// 2. The request is counted, then held for the configured delay.
// 3. An injected failure, if any is armed, answers it.
// 4. A request with an Authorization header is checked as S3 checks a Signature Version 4
//    header (below); a failure answers S3's error document. Requests without one go on
//    anonymously; query-string authentication (presigned URLs) is answered 501 NotImplemented.
// 5. s3rver handles it (s3rver itself checks only that the key id exists).
//
// The signature check: the Credential scope must name the server's region (400
// AuthorizationHeaderMalformed, naming the expected region, as S3 does for a client in the
// wrong region) and service "s3"; x-amz-date must be within 15 minutes of now (403
// RequestTimeTooSkewed); the key id must be the configured one (403 InvalidAccessKeyId);
// x-amz-content-sha256 must be present (400 InvalidRequest); host and every x-amz-* header
// must be signed (403 AccessDenied); the signature must match the one computed from the
// canonical request (403 SignatureDoesNotMatch, with the string to sign and the canonical
// request in the error, as S3 gives them). The canonical request uses the path exactly as
// sent (S3 neither normalises nor double-encodes it), the query string decoded, re-encoded per
// RFC 3986 and sorted, the signed headers' values trimmed with inner runs of spaces collapsed
// (repeated headers joined with ','), and x-amz-content-sha256 as the payload hash. A request
// without a body must carry the hash of the empty string or UNSIGNED-PAYLOAD (400
// XAmzContentSHA256Mismatch otherwise); a body is not hashed to compare.
'use strict';

const crypto = require('crypto');
const http = require('http');
const path = require('path');

const kEmptySha256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const kMaxSkewMs = 15 * 60 * 1000;
const kAdminPrefix = '/__keel/';

function usage(message) {
  process.stderr.write(`s3rver_launch: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const options = { buckets: [] };
  const names = {
    '--module': 'module',
    '--directory': 'directory',
    '--port': 'port',
    '--region': 'region',
    '--access-key-id': 'accessKeyId',
    '--secret-access-key': 'secretAccessKey',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) usage(`${flag} needs a value`);
    if (flag === '--bucket') {
      options.buckets.push(value);
    } else if (flag in names) {
      options[names[flag]] = value;
    } else {
      usage(`unknown flag ${flag}`);
    }
  }
  for (const name of Object.values(names)) {
    if (options[name] === undefined) usage(`missing ${name}`);
  }
  options.port = Number(options.port);
  if (!Number.isInteger(options.port) || options.port <= 0 || options.port > 65535) {
    usage('--port must be a TCP port');
  }
  return options;
}

// ---- S3 error documents ----

function xmlEscape(text) {
  return String(text).replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function requestId() {
  return crypto.randomBytes(8).toString('hex').toUpperCase();
}

// Answers S3's error document: <Error><Code/><Message/>(details)<RequestId/></Error>.
function sendError(res, status, code, message, details = {}) {
  const id = requestId();
  const fields = Object.entries(details)
    .map(([name, value]) => `<${name}>${xmlEscape(value)}</${name}>`)
    .join('');
  const body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${xmlEscape(code)}</Code><Message>${xmlEscape(message)}</Message>` +
    `${fields}<RequestId>${id}</RequestId></Error>`;
  res.writeHead(status, {
    'Content-Type': 'application/xml',
    'Content-Length': Buffer.byteLength(body),
    'x-amz-request-id': id,
  });
  res.end(body);
}

// The messages S3 gives with the codes a fault is likely to name.
const kFaultMessages = {
  SlowDown: 'Please reduce your request rate.',
  InternalError: 'We encountered an internal error. Please try again.',
  ServiceUnavailable: 'Service is unable to handle request.',
};

// ---- Signature Version 4 ----

function sha256Hex(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function hmac(key, data) {
  return crypto.createHmac('sha256', key).update(data).digest();
}

// RFC 3986 percent-encoding: everything but A-Z a-z 0-9 - _ . ~, as %XX with upper-case hex.
function uriEncode(text) {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function uriDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch (err) {
    return text;  // a stray '%': S3 takes the text as it is
  }
}

function canonicalQuery(rawQuery) {
  if (rawQuery === '') return '';
  return rawQuery
    .split('&')
    .filter((pair) => pair !== '')
    .map((pair) => {
      const equals = pair.indexOf('=');
      const name = equals < 0 ? pair : pair.slice(0, equals);
      const value = equals < 0 ? '' : pair.slice(equals + 1);
      return [uriEncode(uriDecode(name)), uriEncode(uriDecode(value))];
    })
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
}

// The values of header `name` (lower case) as sent, trimmed, inner spaces collapsed, joined
// with ','; undefined when the request has no such header.
function canonicalHeaderValue(rawHeaders, name) {
  const values = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === name) {
      values.push(rawHeaders[i + 1].trim().replace(/\s+/g, ' '));
    }
  }
  return values.length === 0 ? undefined : values.join(',');
}

// "20240102T030405Z" -> milliseconds since the epoch, NaN when malformed.
function parseAmzDate(text) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text || '');
  if (!m) return NaN;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

function amzDate(ms) {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
}

// Checks a request's Signature Version 4 Authorization header. Returns null when it is good,
// or [status, code, message, details] for the error S3 would answer.
function checkSignature(req, options) {
  const authorization = req.headers['authorization'];
  const malformed = (message) => [400, 'AuthorizationHeaderMalformed', message, {}];
  const space = authorization.indexOf(' ');
  const algorithm = space < 0 ? authorization : authorization.slice(0, space);
  if (algorithm !== 'AWS4-HMAC-SHA256') {
    return [
      400,
      'InvalidRequest',
      'The authorization mechanism you have provided is not supported. Please use ' +
        'AWS4-HMAC-SHA256.',
      {},
    ];
  }
  const fields = new Map();
  for (const part of authorization.slice(space + 1).split(',')) {
    const equals = part.indexOf('=');
    if (equals < 0) continue;
    fields.set(part.slice(0, equals).trim(), part.slice(equals + 1).trim());
  }
  for (const name of ['Credential', 'SignedHeaders', 'Signature']) {
    if (!fields.has(name)) {
      return malformed(`The authorization header is malformed; missing ${name}.`);
    }
  }
  const credential = fields.get('Credential');
  const scope = credential.split('/');
  if (scope.length !== 5) {
    return malformed(
      `The authorization header is malformed; the Credential is mal-formed; expecting ` +
        `"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`,
    );
  }
  const [keyId, scopeDate, region, service, terminator] = scope;
  if (region !== options.region) {
    const detail = { Region: options.region };
    return [
      400,
      'AuthorizationHeaderMalformed',
      `The authorization header is malformed; the region '${region}' is wrong; expecting ` +
        `'${options.region}'`,
      detail,
    ];
  }
  if (service !== 's3') {
    return malformed(
      `The authorization header is malformed; incorrect service '${service}'. This endpoint ` +
        `belongs to 's3'.`,
    );
  }
  if (terminator !== 'aws4_request') {
    return malformed(
      `The authorization header is malformed; incorrect terminal '${terminator}'. This ` +
        `endpoint uses 'aws4_request'.`,
    );
  }
  const date = req.headers['x-amz-date'];
  const requestTime = parseAmzDate(date);
  if (Number.isNaN(requestTime)) {
    return [403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header', {}];
  }
  if (scopeDate !== date.slice(0, 8)) {
    return malformed(
      `The authorization header is malformed; Invalid credential date "${scopeDate}". This ` +
        `date is not the same as X-Amz-Date: "${date.slice(0, 8)}".`,
    );
  }
  const now = Date.now();
  if (Math.abs(now - requestTime) > kMaxSkewMs) {
    return [
      403,
      'RequestTimeTooSkewed',
      'The difference between the request time and the current time is too large.',
      { RequestTime: date, ServerTime: amzDate(now), MaxAllowedSkewMilliseconds: kMaxSkewMs },
    ];
  }
  if (keyId !== options.accessKeyId) {
    return [
      403,
      'InvalidAccessKeyId',
      'The AWS Access Key Id you provided does not exist in our records.',
      { AWSAccessKeyId: keyId },
    ];
  }
  const payloadHash = req.headers['x-amz-content-sha256'];
  if (payloadHash === undefined) {
    return [
      400,
      'InvalidRequest',
      'Missing required header for this request: x-amz-content-sha256',
      {},
    ];
  }
  if (!/^(UNSIGNED-PAYLOAD|STREAMING-AWS4-HMAC-SHA256-PAYLOAD|[0-9a-f]{64})$/.test(payloadHash)) {
    return [
      400,
      'InvalidArgument',
      'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a ' +
        'valid sha256 value.',
      { ArgumentName: 'x-amz-content-sha256', ArgumentValue: payloadHash },
    ];
  }
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  if (!hasBody && payloadHash !== kEmptySha256 && payloadHash !== 'UNSIGNED-PAYLOAD') {
    return [
      400,
      'XAmzContentSHA256Mismatch',
      "The provided 'x-amz-content-sha256' header does not match what was computed.",
      { ClientComputedContentSHA256: payloadHash, S3ComputedContentSHA256: kEmptySha256 },
    ];
  }
  const signedHeaderList = fields.get('SignedHeaders');
  const signedHeaders = signedHeaderList.split(';');
  const unsigned = ['host', ...Object.keys(req.headers).filter((h) => h.startsWith('x-amz-'))]
    .filter((h) => !signedHeaders.includes(h))
    .sort();
  if (unsigned.length > 0) {
    return [
      403,
      'AccessDenied',
      'There were headers present in the request which were not signed',
      { HeadersNotSigned: unsigned.join(', ') },
    ];
  }

  const target = req.url;
  const question = target.indexOf('?');
  const canonicalUri = (question < 0 ? target : target.slice(0, question)) || '/';
  const rawQuery = question < 0 ? '' : target.slice(question + 1);
  const canonicalHeaders = signedHeaders
    .map((name) => `${name}:${canonicalHeaderValue(req.rawHeaders, name) ?? ''}\n`)
    .join('');
  const canonicalRequest = [
    req.method,
    canonicalUri,
    canonicalQuery(rawQuery),
    canonicalHeaders,
    signedHeaderList,
    payloadHash,
  ].join('\n');
  const credentialScope = [scopeDate, region, service, terminator].join('/');
  const stringToSign = [
    'AWS4-HMAC-SHA256',
    date,
    credentialScope,
    sha256Hex(canonicalRequest),
  ].join('\n');
  const signingKey = [scopeDate, region, service, terminator].reduce(
    (key, part) => hmac(key, part),
    Buffer.from(`AWS4${options.secretAccessKey}`),
  );
  const expected = hmac(signingKey, stringToSign).toString('hex');
  const provided = fields.get('Signature');
  if (
    provided.length !== expected.length ||
    !crypto.timingSafeEqual(Buffer.from(provided), Buffer.from(expected))
  ) {
    return [
      403,
      'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check ' +
        'your key and signing method.',
      {
        AWSAccessKeyId: keyId,
        StringToSign: stringToSign,
        SignatureProvided: provided,
        CanonicalRequest: canonicalRequest,
      },
    ];
  }
  return null;
}

// ---- faults and the admin route ----

const faults = {
  delayMs: 0,
  failStatus: 0,
  failCode: '',
  failCount: -1,  // requests left to fail; -1: every request
};
let requestCount = 0;

function isLoopback(address) {
  return (
    typeof address === 'string' &&
    (address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.'))
  );
}

function sendJson(res, status, value) {
  const body = JSON.stringify(value) + '\n';
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

function handleAdmin(req, res) {
  if (!isLoopback(req.socket.remoteAddress)) {
    sendJson(res, 403, { error: 'the admin route answers loopback peers only' });
    return;
  }
  const url = new URL(req.url, 'http://127.0.0.1');
  const route = url.pathname.slice(kAdminPrefix.length);
  const query = url.searchParams;
  switch (route) {
    case 'fail': {
      const status = Number(query.get('status'));
      const code = query.get('code') || '';
      const count = query.has('count') ? Number(query.get('count')) : -1;
      if (!Number.isInteger(status) || status < 400 || status > 599) {
        sendJson(res, 400, { error: `expected status=<400..599>, got ${query.get('status')}` });
        return;
      }
      if (!/^[A-Za-z][A-Za-z0-9]*$/.test(code)) {
        sendJson(res, 400, { error: `expected code=<an S3 error code>, got ${code}` });
        return;
      }
      if (!Number.isInteger(count) || count < -1) {
        sendJson(res, 400, { error: `expected count=<requests, -1 for all>, got ${count}` });
        return;
      }
      Object.assign(faults, { failStatus: status, failCode: code, failCount: count });
      break;
    }
    case 'delay': {
      const ms = Number(query.get('ms'));
      if (!Number.isInteger(ms) || ms < 0) {
        sendJson(res, 400, { error: `expected ms=<milliseconds>, got ${query.get('ms')}` });
        return;
      }
      faults.delayMs = ms;
      break;
    }
    case 'reset':
      Object.assign(faults, { delayMs: 0, failStatus: 0, failCode: '', failCount: -1 });
      break;
    case 'stats':
      break;
    default:
      sendJson(res, 404, { error: `no admin route ${url.pathname}` });
      return;
  }
  sendJson(res, 200, { requests: requestCount, ...faults });
}

// Answers an armed failure; false when none is armed.
function answerFault(res) {
  if (faults.failStatus === 0 || faults.failCount === 0) return false;
  if (faults.failCount > 0) --faults.failCount;
  const message = kFaultMessages[faults.failCode] || `Injected fault ${faults.failCode}.`;
  sendError(res, faults.failStatus, faults.failCode, message);
  return true;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const S3rver = require(options.module);
  // s3rver's own check wants the key id in its account registry; it ships one key pair.
  const account = require(path.join(options.module, 'lib', 'models', 'account'));
  account.DUMMY_ACCOUNT.createKeyPair(options.accessKeyId, options.secretAccessKey);

  const s3rver = new S3rver({
    address: '127.0.0.1',
    port: options.port,
    directory: options.directory,
    silent: true,
    serviceEndpoint: 'localhost',
    configureBuckets: options.buckets.map((name) => ({ name })),
  });
  await s3rver.configureBuckets();
  const handleS3 = s3rver.callback();

  const handle = (req, res) => {
    // At <bucket>.s3.localhost the same path is a key.
    const host = (req.headers['host'] || '').replace(/:\d+$/, '');
    if (host === '127.0.0.1' && req.url.startsWith(kAdminPrefix)) {
      handleAdmin(req, res);
      return;
    }
    ++requestCount;
    const proceed = () => {
      if (res.destroyed || req.socket.destroyed) return;  // the client gave up meanwhile
      if (answerFault(res)) return;
      if (req.headers['authorization'] !== undefined) {
        const failure = checkSignature(req, options);
        if (failure !== null) {
          sendError(res, ...failure);
          return;
        }
      } else if (/[?&](X-Amz-Algorithm|Signature)=/.test(req.url)) {
        sendError(
          res,
          501,
          'NotImplemented',
          'Query-string authentication is not implemented by this test server.',
        );
        return;
      }
      handleS3(req, res);
    };
    if (faults.delayMs > 0) {
      setTimeout(proceed, faults.delayMs);
    } else {
      proceed();
    }
  };

  const server = http.createServer(handle);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, '127.0.0.1', resolve);
  });
  // Stop at once: s3rver has written every object it acknowledged, and open keep-alive
  // connections must not hold the exit up.
  process.on('SIGTERM', () => process.exit(0));
  process.stdout.write(`keel-s3rver listening on 127.0.0.1:${server.address().port}\n`);
}

main().catch((err) => {
  // The fixture retries with a fresh port when it reads "address already in use".
  const what = err.code === 'EADDRINUSE' ? 'address already in use: ' : '';
  process.stderr.write(`s3rver_launch: ${what}${err.stack || err}\n`);
  process.exit(1);
});
