// Usage: node client.mjs URL — GET with the placeholder key; proxy and CA come from the environment authsome sets.
import { EnvHttpProxyAgent, fetch, setGlobalDispatcher } from 'undici';

setGlobalDispatcher(new EnvHttpProxyAgent());
const response = await fetch(process.argv[2], {
  headers: { Authorization: `Bearer ${process.env.OPENAI_API_KEY}` },
});
console.log(response.status, await response.text());
