// A console program around VmcReceiver: prints what it decodes, one JSON line per frame.
// Used by the tests (built with Mono: mcs VmcReceiver.cs VmcDump.cs -out:vmcdump.exe), and handy
// to see what a sender sends:
//
//   mono vmcdump.exe --port 39539 --frames 100 --timeout 30
//
// First line: "listening PORT". Then per frame:
//   {"seq":1,"time":0.2,"ok":[1,3,0,1],"root":[px,py,pz,qx,qy,qz,qw],"bones":{"Hips":[...],...}}
// Exit status: 0 after --frames frames, 3 when --timeout seconds pass first, 2 for bad arguments.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;
using System.Threading;
using Meshstream.Vmc;

public static class VmcDump
{
    public static int Main(string[] args)
    {
        int port = 39539, frames = 0;
        double timeoutS = 0;
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                switch (args[i])
                {
                    case "--port": port = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                    case "--frames": frames = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                    case "--timeout": timeoutS = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                    default: throw new FormatException("unknown option " + args[i]);
                }
            }
        }
        catch (Exception error)
        {
            Console.Error.WriteLine("error: " + error.Message + " (usage: vmcdump.exe [--port N] [--frames N] [--timeout S])");
            return 2;
        }

        var received = new BlockingQueue();
        using (var receiver = new VmcReceiver(port, "127.0.0.1"))
        {
            receiver.FrameReceived += received.Add;
            Console.WriteLine("listening " + receiver.Port);
            Console.Out.Flush();
            var deadline = timeoutS > 0 ? DateTime.UtcNow.AddSeconds(timeoutS) : DateTime.MaxValue;
            int printed = 0;
            while (frames == 0 || printed < frames)
            {
                var frame = received.Take(deadline);
                if (frame == null)
                {
                    Console.Error.WriteLine("timeout: " + printed + " frames received");
                    return 3;
                }
                Console.WriteLine(ToJson(frame));
                Console.Out.Flush();
                printed++;
            }
        }
        return 0;
    }

    static string ToJson(VmcFrame frame)
    {
        var json = new StringBuilder();
        json.Append("{\"seq\":").Append(frame.Sequence);
        json.Append(",\"time\":").Append(Number(frame.Time));
        json.Append(",\"ok\":[").Append(frame.Loaded).Append(',').Append(frame.CalibrationState).Append(',')
            .Append(frame.CalibrationMode).Append(',').Append(frame.TrackingStatus).Append(']');
        json.Append(",\"root\":").Append(frame.HasRoot ? Pose(frame.Root) : "null");
        json.Append(",\"bones\":{");
        bool first = true;
        foreach (var bone in frame.Bones.OrderBy(pair => pair.Key, StringComparer.Ordinal))
        {
            if (!first) json.Append(',');
            first = false;
            json.Append('"').Append(bone.Key.Replace("\\", "\\\\").Replace("\"", "\\\"")).Append("\":").Append(Pose(bone.Value));
        }
        return json.Append("}}").ToString();
    }

    static string Pose(VmcPose p)
    {
        var values = new[] { p.Px, p.Py, p.Pz, p.Qx, p.Qy, p.Qz, p.Qw };
        return "[" + string.Join(",", values.Select(Number)) + "]";
    }

    static string Number(float value)
    {
        return float.IsNaN(value) || float.IsInfinity(value) ? "null" : value.ToString("R", CultureInfo.InvariantCulture);
    }

    // Frames from the receiver's thread to the main one, waiting up to a deadline.
    sealed class BlockingQueue
    {
        readonly Queue<VmcFrame> queue = new Queue<VmcFrame>();

        public void Add(VmcFrame frame)
        {
            lock (queue) { queue.Enqueue(frame); Monitor.Pulse(queue); }
        }

        public VmcFrame Take(DateTime deadline)
        {
            lock (queue)
            {
                while (queue.Count == 0)
                {
                    var left = deadline - DateTime.UtcNow;
                    if (left <= TimeSpan.Zero) return null;
                    Monitor.Wait(queue, left > TimeSpan.FromSeconds(1) ? TimeSpan.FromSeconds(1) : left);
                }
                return queue.Dequeue();
            }
        }
    }
}
