// Stands in for the application's own processing code (the seed's processUserDocument):
// the worker file only needs it to take the document id and report progress.
export async function processUserDocument(documentId, { progress }) {
  progress(10, "downloading");
  await new Promise((resolve) => setTimeout(resolve, 100));
  progress(90, "analysing");
  return { document: documentId, processedBy: "node", node: process.version };
}
