// A VMC protocol receiver in plain C#: OSC over UDP, no Unity types, so it compiles with any C#
// compiler (the tests build it with Mono's mcs) and inside Unity (MeshstreamVmcAvatar.cs uses it).
//
//   var receiver = new VmcReceiver(39539);        // listens on UDP, on a thread of its own
//   VmcFrame frame = receiver.Latest;             // the newest state, or null before the first
//   VmcPose hips; if (frame.Bones.TryGetValue("Hips", out hips)) { ... }
//
// What meshstream sends (docs/CONSUMERS.md): per frame one OSC bundle with /VMC/Ext/Root/Pos,
// one /VMC/Ext/Bone/Pos per Unity HumanBodyBones name (local position in metres and local
// rotation x, y, z, w, Unity's left-handed axes, identity = T-pose), /VMC/Ext/T (time, seconds)
// and /VMC/Ext/OK (loaded, calibration state, calibration mode, tracking 1 or 0).
// VmcDecoder accepts any VMC sender: values accumulate, and each datagram that changed
// something gives a new frame.

using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;

namespace Meshstream.Vmc
{
    /// <summary>A position (metres) and rotation (quaternion x, y, z, w) in Unity's axes.</summary>
    public struct VmcPose
    {
        public float Px, Py, Pz, Qx, Qy, Qz, Qw;
    }

    /// <summary>One snapshot of everything received so far.</summary>
    public sealed class VmcFrame
    {
        /// <summary>Counts the frames this receiver produced, from 1.</summary>
        public long Sequence;
        /// <summary>/VMC/Ext/T: the sender's time in seconds (NaN before the first).</summary>
        public float Time = float.NaN;
        /// <summary>/VMC/Ext/OK arguments: loaded, calibration state, calibration mode, tracking (-1: not sent).</summary>
        public int Loaded = -1, CalibrationState = -1, CalibrationMode = -1, TrackingStatus = -1;
        /// <summary>/VMC/Ext/Root/Pos, and whether one has arrived.</summary>
        public VmcPose Root;
        public bool HasRoot;
        /// <summary>/VMC/Ext/Bone/Pos by bone name (HumanBodyBones names: "Hips", "LeftUpperArm", ...).</summary>
        public Dictionary<string, VmcPose> Bones = new Dictionary<string, VmcPose>();
    }

    /// <summary>Thrown for a datagram that is not valid OSC; the message says what was wrong.</summary>
    public sealed class OscFormatException : Exception
    {
        public OscFormatException(string message) : base(message) { }
    }

    /// <summary>OSC 1.0 parsing and the VMC state it feeds; no sockets, not thread-safe.</summary>
    public sealed class VmcDecoder
    {
        readonly VmcFrame state = new VmcFrame();
        long sequence;

        /// <summary>Decodes one datagram (a message or a bundle); returns a new snapshot when it
        /// changed the state, else null. Throws OscFormatException for malformed OSC.</summary>
        public VmcFrame Decode(byte[] data, int length)
        {
            bool changed = false;
            DecodePacket(data, 0, length, ref changed, 0);
            if (!changed) return null;
            var frame = new VmcFrame
            {
                Sequence = ++sequence,
                Time = state.Time,
                Loaded = state.Loaded,
                CalibrationState = state.CalibrationState,
                CalibrationMode = state.CalibrationMode,
                TrackingStatus = state.TrackingStatus,
                Root = state.Root,
                HasRoot = state.HasRoot,
                Bones = new Dictionary<string, VmcPose>(state.Bones),
            };
            return frame;
        }

        void DecodePacket(byte[] data, int start, int end, ref bool changed, int depth)
        {
            if (depth > 8) throw new OscFormatException("bundles nested more than 8 deep");
            if (end - start >= 8 && data[start] == (byte)'#')
            {
                int offset = start;
                string tag = ReadString(data, ref offset, end);
                if (tag != "#bundle") throw new OscFormatException("a packet starting with '#' must be a #bundle");
                offset += 8;  // time tag: VMC senders use "immediately"; elements are applied in order
                while (offset < end)
                {
                    int size = ReadInt(data, ref offset, end);
                    if (size < 0 || size % 4 != 0 || offset + size > end)
                        throw new OscFormatException("bundle element size " + size + " does not fit the datagram");
                    DecodePacket(data, offset, offset + size, ref changed, depth + 1);
                    offset += size;
                }
                return;
            }
            DecodeMessage(data, start, end, ref changed);
        }

        void DecodeMessage(byte[] data, int start, int end, ref bool changed)
        {
            int offset = start;
            string address = ReadString(data, ref offset, end);
            if (address.Length == 0 || address[0] != '/') throw new OscFormatException("an OSC address must start with '/'");
            string tags = offset < end ? ReadString(data, ref offset, end) : ",";
            if (tags.Length == 0 || tags[0] != ',') throw new OscFormatException("type tags must start with ','");
            var args = new List<object>(tags.Length);
            for (int i = 1; i < tags.Length; i++)
            {
                switch (tags[i])
                {
                    case 'i': args.Add(ReadInt(data, ref offset, end)); break;
                    case 'f': args.Add(ReadFloat(data, ref offset, end)); break;
                    case 's': case 'S': args.Add(ReadString(data, ref offset, end)); break;
                    case 'd': args.Add((float)ReadDouble(data, ref offset, end)); break;
                    case 'h': args.Add((int)ReadLong(data, ref offset, end)); break;
                    case 'T': args.Add(true); break;
                    case 'F': args.Add(false); break;
                    case 'N': case 'I': args.Add(null); break;
                    case 'b':
                        int size = ReadInt(data, ref offset, end);
                        offset += (size + 3) & ~3;
                        if (size < 0 || offset > end) throw new OscFormatException("blob longer than the datagram");
                        args.Add(null);
                        break;
                    default: return;  // a type VMC never uses: skip the whole message
                }
            }
            if (Apply(address, args)) changed = true;
        }

        bool Apply(string address, List<object> args)
        {
            switch (address)
            {
                case "/VMC/Ext/Bone/Pos":
                    {
                        VmcPose pose;
                        string name;
                        if (!ReadNamedPose(args, out name, out pose)) return false;
                        state.Bones[name] = pose;
                        return true;
                    }
                case "/VMC/Ext/Root/Pos":
                    {
                        VmcPose pose;
                        string name;
                        if (!ReadNamedPose(args, out name, out pose)) return false;
                        state.Root = pose;
                        state.HasRoot = true;
                        return true;
                    }
                case "/VMC/Ext/T":
                    if (args.Count < 1 || !(args[0] is float)) return false;
                    state.Time = (float)args[0];
                    return true;
                case "/VMC/Ext/OK":
                    if (args.Count < 1 || !(args[0] is int)) return false;
                    state.Loaded = (int)args[0];
                    state.CalibrationState = args.Count > 1 && args[1] is int ? (int)args[1] : -1;
                    state.CalibrationMode = args.Count > 2 && args[2] is int ? (int)args[2] : -1;
                    state.TrackingStatus = args.Count > 3 && args[3] is int ? (int)args[3] : -1;
                    return true;
                default:
                    return false;  // blend shapes, devices, camera...: not used here
            }
        }

        static bool ReadNamedPose(List<object> args, out string name, out VmcPose pose)
        {
            name = null;
            pose = new VmcPose();
            if (args.Count < 8 || !(args[0] is string)) return false;
            var values = new float[7];
            for (int i = 0; i < 7; i++)
            {
                if (!(args[i + 1] is float)) return false;
                values[i] = (float)args[i + 1];
            }
            name = (string)args[0];
            pose.Px = values[0]; pose.Py = values[1]; pose.Pz = values[2];
            pose.Qx = values[3]; pose.Qy = values[4]; pose.Qz = values[5]; pose.Qw = values[6];
            return true;
        }

        // -- OSC atoms: big-endian, strings NUL-terminated and padded to 4 bytes ----------------
        static void Need(int offset, int count, int end)
        {
            if (offset + count > end) throw new OscFormatException("message shorter than its type tags say");
        }

        static int ReadInt(byte[] data, ref int offset, int end)
        {
            Need(offset, 4, end);
            int value = (data[offset] << 24) | (data[offset + 1] << 16) | (data[offset + 2] << 8) | data[offset + 3];
            offset += 4;
            return value;
        }

        static long ReadLong(byte[] data, ref int offset, int end)
        {
            long high = (uint)ReadInt(data, ref offset, end);
            long low = (uint)ReadInt(data, ref offset, end);
            return (high << 32) | low;
        }

        static float ReadFloat(byte[] data, ref int offset, int end)
        {
            int bits = ReadInt(data, ref offset, end);
            return BitConverter.ToSingle(BitConverter.GetBytes(bits), 0);
        }

        static double ReadDouble(byte[] data, ref int offset, int end)
        {
            return BitConverter.Int64BitsToDouble(ReadLong(data, ref offset, end));
        }

        static string ReadString(byte[] data, ref int offset, int end)
        {
            int zero = Array.IndexOf(data, (byte)0, offset, end - offset);
            if (zero < 0) throw new OscFormatException("string without its terminating NUL");
            string text = Encoding.UTF8.GetString(data, offset, zero - offset);
            offset = (zero + 4) & ~3;
            return text;
        }
    }

    /// <summary>Listens for VMC on a UDP port, on a background thread; Latest is always the
    /// newest frame. FrameReceived (optional) runs on that thread for every new frame.</summary>
    public sealed class VmcReceiver : IDisposable
    {
        readonly UdpClient socket;
        readonly Thread thread;
        readonly VmcDecoder decoder = new VmcDecoder();
        volatile VmcFrame latest;
        volatile bool running = true;

        public event Action<VmcFrame> FrameReceived;

        /// <summary>Datagrams that were not valid OSC (skipped).</summary>
        public int MalformedDatagrams { get; private set; }

        /// <summary>The UDP port (useful when constructed with port 0: any free port).</summary>
        public int Port { get; private set; }

        public VmcFrame Latest { get { return latest; } }

        public VmcReceiver(int port = 39539, string bindAddress = "0.0.0.0")
        {
            socket = new UdpClient(new IPEndPoint(IPAddress.Parse(bindAddress), port));
            socket.Client.ReceiveBufferSize = 1 << 20;
            Port = ((IPEndPoint)socket.Client.LocalEndPoint).Port;
            thread = new Thread(Run) { IsBackground = true, Name = "VMC receiver" };
            thread.Start();
        }

        void Run()
        {
            var from = new IPEndPoint(IPAddress.Any, 0);
            while (running)
            {
                byte[] data;
                try { data = socket.Receive(ref from); }
                catch (SocketException) { if (!running) return; continue; }
                catch (ObjectDisposedException) { return; }
                VmcFrame frame;
                try { frame = decoder.Decode(data, data.Length); }
                catch (OscFormatException) { MalformedDatagrams++; continue; }
                if (frame == null) continue;
                latest = frame;
                var handler = FrameReceived;
                if (handler != null) handler(frame);
            }
        }

        public void Dispose()
        {
            running = false;
            socket.Close();
            thread.Join(1000);
        }
    }
}
