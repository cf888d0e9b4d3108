// Languages offered by the language selectors.
//
// The server may list its model's languages in GET /health (`languages`); until it does, the
// page falls back to the languages multilingual Whisper models know, or to English alone for the
// English-only models (names ending in ".en", such as "tiny.en").

export const WHISPER_LANGUAGES = {
  en: "English", zh: "Chinese", de: "German", es: "Spanish", ru: "Russian", ko: "Korean",
  fr: "French", ja: "Japanese", pt: "Portuguese", tr: "Turkish", pl: "Polish", ca: "Catalan",
  nl: "Dutch", ar: "Arabic", sv: "Swedish", it: "Italian", id: "Indonesian", hi: "Hindi",
  fi: "Finnish", vi: "Vietnamese", he: "Hebrew", uk: "Ukrainian", el: "Greek", ms: "Malay",
  cs: "Czech", ro: "Romanian", da: "Danish", hu: "Hungarian", ta: "Tamil", no: "Norwegian",
  th: "Thai", ur: "Urdu", hr: "Croatian", bg: "Bulgarian", lt: "Lithuanian", la: "Latin",
  mi: "Maori", ml: "Malayalam", cy: "Welsh", sk: "Slovak", te: "Telugu", fa: "Persian",
  lv: "Latvian", bn: "Bengali", sr: "Serbian", az: "Azerbaijani", sl: "Slovenian",
  kn: "Kannada", et: "Estonian", mk: "Macedonian", br: "Breton", eu: "Basque", is: "Icelandic",
  hy: "Armenian", ne: "Nepali", mn: "Mongolian", bs: "Bosnian", kk: "Kazakh", sq: "Albanian",
  sw: "Swahili", gl: "Galician", mr: "Marathi", pa: "Punjabi", si: "Sinhala", km: "Khmer",
  sn: "Shona", yo: "Yoruba", so: "Somali", af: "Afrikaans", oc: "Occitan", ka: "Georgian",
  be: "Belarusian", tg: "Tajik", sd: "Sindhi", gu: "Gujarati", am: "Amharic", yi: "Yiddish",
  lo: "Lao", uz: "Uzbek", fo: "Faroese", ht: "Haitian Creole", ps: "Pashto", tk: "Turkmen",
  nn: "Nynorsk", mt: "Maltese", sa: "Sanskrit", lb: "Luxembourgish", my: "Myanmar",
  bo: "Tibetan", tl: "Tagalog", mg: "Malagasy", as: "Assamese", tt: "Tatar", haw: "Hawaiian",
  ln: "Lingala", ha: "Hausa", ba: "Bashkir", jw: "Javanese", su: "Sundanese", yue: "Cantonese",
};

export function languageName(code) {
  return WHISPER_LANGUAGES[code] ?? code;
}

function modelBaseName(model) {
  return String(model ?? "").split(/[\\/]/).filter(Boolean).pop() ?? "";
}

/**
 * The language choices for a server, from its /health answer (or null when unknown):
 * {auto: whether "auto" makes sense, codes: [...]}.
 */
export function languageChoices(health) {
  if (Array.isArray(health?.languages) && health.languages.length > 0) {
    const codes = health.languages.map(String);
    return { auto: codes.length > 1, codes };
  }
  if (modelBaseName(health?.model).endsWith(".en")) return { auto: false, codes: ["en"] };
  const codes = Object.keys(WHISPER_LANGUAGES);
  codes.sort((a, b) => languageName(a).localeCompare(languageName(b)));
  return { auto: true, codes };
}

/** Fills a <select> with the choices, keeping `preferred` selected when it is offered. */
export function fillLanguageSelect(select, choices, preferred) {
  const options = [];
  if (choices.auto) options.push(new Option("Detect automatically", "auto"));
  for (const code of choices.codes) options.push(new Option(`${languageName(code)} (${code})`, code));
  select.replaceChildren(...options);
  const values = options.map((option) => option.value);
  select.value = values.includes(preferred) ? preferred : values[0];
}
