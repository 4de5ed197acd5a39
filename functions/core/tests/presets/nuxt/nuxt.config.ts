export default defineNuxtConfig({ compatibilityDate: "2024-11-01" });
