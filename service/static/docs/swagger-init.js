// Starts Swagger UI on /docs (a file, not an inline script, so a strict CSP can allow it).
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.url,
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null, // no request to the public validator
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
