module.exports = { siteMetadata: { title: "Gatsby site" }, plugins: [] };
